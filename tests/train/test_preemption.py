"""The SIGTERM flag and the stop decision the loop polls (the loop's SIGTERM run end to end is in test_loop.py)."""

import os
import signal

from bitune_jax.train.preemption import Preemption, install_sigterm_handler


def test_sigterm_sets_flag_and_restores_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append("previous"))
    try:
        flag = install_sigterm_handler(lambda signum: seen.append(signum))
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signum == signal.SIGTERM and seen == [signal.SIGTERM]
        flag.uninstall()
        flag.uninstall()  # idempotent
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM, "previous"]
        with install_sigterm_handler() as flag2:
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag2.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen[-1] == "previous"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_preemption_is_agreed_once_the_signal_arrived_and_uninstalls_on_exit():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with Preemption() as preemption:
            assert not preemption.agreed(step=3)
            os.kill(os.getpid(), signal.SIGTERM)
            assert preemption.agreed(step=3)  # one process: every step, no collective
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
