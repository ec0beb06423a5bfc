import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bitune_jax.models.config import ModelConfig
from bitune_jax.models.nnx_module import DecoderLM
from bitune_jax.models.transformer import forward

CFG = ModelConfig(
    family="llama", vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
)


def test_nnx_module_runs_the_functional_forward_and_trains():
    model = DecoderLM(CFG, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 7)))
    params = jax.tree.map(lambda p: p[...], model.params, is_leaf=lambda x: isinstance(x, nnx.Param))
    np.testing.assert_array_equal(model(tokens)[0], forward(params, tokens, CFG)[0])

    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(model):
            logits, _ = model(tokens)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    first = step(model, optimizer)
    for _ in range(3):
        last = step(model, optimizer)
    assert last < first
