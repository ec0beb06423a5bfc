"""The words and phrasings of the list-edits task (`list_edits`): what varies between problems and traces, apart from
the procedure. The nouns and names the lists hold, the question's sentences per family and edit, and the styles of
the trace's lines and remarks; `list_edits` draws from these tables and solves the edits."""

from __future__ import annotations

import re

# One token each in the SmolLM2 tokenizer, with and without a leading space (checked when this list was written).
NOUNS = (
    "apple",
    "cat",
    "dog",
    "egg",
    "book",
    "cup",
    "hat",
    "key",
    "pen",
    "box",
    "bag",
    "ball",
    "bed",
    "bell",
    "bird",
    "boat",
    "bread",
    "bus",
    "car",
    "chair",
    "clock",
    "coin",
    "door",
    "fish",
    "flag",
    "horse",
    "leaf",
    "milk",
    "moon",
    "nut",
    "orange",
    "pig",
    "ring",
    "rose",
    "sock",
    "star",
    "sun",
    "table",
    "tree",
    "train",
)
# One token each with a leading space in the SmolLM2 tokenizer.
NAMES = (
    "Mia",
    "Leo",
    "Noah",
    "Omar",
    "Ivy",
    "Ethan",
    "Kai",
    "Ruby",
    "Sam",
    "Maya",
    "Finn",
    "Iris",
    "Owen",
    "Tara",
    "Anna",
    "Ben",
    "Tom",
    "Max",
    "Lily",
    "Jack",
    "Alex",
    "Dan",
    "Kim",
    "Paul",
    "Adam",
    "Mark",
    "Luke",
    "Emma",
    "Lucy",
    "Sara",
    "Amy",
    "Joe",
    "Eva",
    "Rosa",
    "Ella",
    "Nina",
    "Ian",
)
WORDS = {"list": NOUNS, "queue": NAMES}
# The trace's canonical name for each edit, the same in both families and for every phrasing of the question: the
# trace translates the story into these.
TRACE = {
    "append": "append {x}",
    "remove": "remove {x}",
    "swap": "swap the first two",
    "last_to_front": "move the last to the front",
    "reverse": "reverse",
}
# How the trace writes its lines, drawn at random per line, with a remark before a step now and then. A teacher's
# long-CoT traces carry this kind of stylistic entropy: one pass over new traces cannot predict it, repetition
# memorizes it, which is the regime the repetition study is about (one epoch of traces in a single fixed format
# reached 0.99 token accuracy on unseen traces within 100 updates, leaving nothing for repetition to fit). Every
# step line still holds the canonical edit and the whole list after it, in brackets.
START_STYLES = ("Start: [{items}]", "The list starts as [{items}]", "Initially: [{items}]", "We begin with [{items}]")
STEP_STYLES = (
    "Step {i}: {edit} -> [{after}]",
    "{i}. {edit}: [{after}]",
    "After step {i} ({edit}): [{after}]",
    "Edit {i} is {edit}, so now [{after}]",
    "Now {edit}. That gives [{after}]",
    "Next, {edit} leaves [{after}]",
)
REMARKS = (
    "Okay.",
    "Let me be careful here.",
    "So far so good.",
    "Let me count: {n} items.",
    "Keep going.",
    "Check the order again.",
)
_STEP_PATTERNS = [
    re.compile(
        "^"
        + re.escape(style)
        .replace(re.escape("{i}"), r"\d+")
        .replace(re.escape("{edit}"), r"(?P<edit>.+?)")
        .replace(re.escape("{after}"), r"(?P<after>[^\[\]]*)")
        + "$"
    )
    for style in STEP_STYLES
]
# The question's sentence for each edit, per family; one is drawn at random per edit. Each is a whole sentence ending
# in "." with no ". " inside, and none equals another's rendering, so a question splits back into its sentences.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "list": {
        "append": ("Add {x} to the end of the list.", "Append {x}.", "Put {x} at the end.", "Write {x} at the bottom."),
        "remove": ("Remove {x}.", "Cross out {x}.", "Take {x} off the list.", "Delete {x} from the list."),
        "swap": (
            "Swap the first two items.",
            "Exchange the first and the second item.",
            "The first two items trade places.",
        ),
        "last_to_front": (
            "Move the last item to the front.",
            "Take the last item and put it first.",
            "The last item moves to the start of the list.",
        ),
        "reverse": (
            "Reverse the list.",
            "Reverse the order of the items.",
            "Write the list backwards, last item first.",
        ),
    },
    "queue": {
        "append": (
            "{x} joins the back of the queue.",
            "{x} arrives and lines up at the back.",
            "{x} gets in line at the end.",
            "{x} joins the back.",
        ),
        "remove": ("{x} leaves the queue.", "{x} steps out of the line.", "{x} gives up and leaves."),
        "swap": (
            "The first two people swap places.",
            "The person at the front lets the second person go ahead.",
            "The first and second people trade places.",
        ),
        "last_to_front": (
            "The last person moves to the front.",
            "The person at the back is moved to the front of the queue.",
            "The last in line jumps to the front.",
        ),
        "reverse": (
            "The queue turns around.",
            "The whole queue reverses its order.",
            "The line turns around, so the back becomes the front.",
        ),
    },
}
INTROS = {
    "list": (
        "A list holds these items, in order: {items}.",
        "Here is a list, from first to last: {items}.",
        "You start with this list of items: {items}.",
    ),
    "queue": (
        "People stand in a queue, from front to back: {items}.",
        "The queue at the ticket office is, from front to back: {items}.",
        "The line at the bakery is, from front to back: {items}.",
    ),
}
ENDINGS = {
    "list": (
        "What is the list at the end?",
        "What does the list hold at the end, in order?",
        "Which items are on the list at the end, from first to last?",
    ),
    "queue": (
        "Who is in the queue at the end, from front to back?",
        "What is the queue at the end, from front to back?",
        "In what order do the people stand at the end, from front to back?",
    ),
}
SINGLE_STEP = {
    "list": "The list is [{items}]. {edit} What is the list now? Answer with the list in brackets.",
    "queue": (
        "The queue, from front to back, is [{items}]. {edit} Who is in the queue now, from front to back? "
        "Answer with the list in brackets."
    ),
}
