"""Customer-support intent classification: a seeded data generator and a rule-based labeller.

The task: given a customer message, answer with exactly one label (``LABELS``): billing, refund,
shipping, technical, account or other.

Two halves keep each other honest, as in examples/travel/travel.py:

* :func:`oracle` is a deterministic, keyword-table labeller. It only sees the message text, never the
  generator's intent: the first label in ``LABELS`` order whose cue words occur wins (documented on the
  function), so a message that names several topics gets the one that takes precedence.
* :func:`generate` samples a "paraphrase family" (a label, one of its issues, slot values such as the
  product, an order number or a city), renders 2-3 phrasings of it, labels every phrasing with
  :func:`oracle`, and raises if the oracle disagrees with the label the generator meant.

Many issues deliberately mention a lower-precedence topic ("the refund form won't load" is technical,
"I was charged twice, I want the extra money back" is a refund, "I can't log in to track my parcel" is
account), and slot values are shared across labels (a city can be a shipping destination or the place
of a shop), so no single word or phrase gives the label away.

Standard library plus components/common/example_data.py, the family loop and command line the examples share
(where slmforge is installed); the script can also be loaded straight from its file path. CLI::

    python examples/support/support.py [--n 1500] [--seed 7] [--out examples/support/data/support.jsonl] [--check]
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from components.common.example_data import command_line, family_rows, to_jsonl  # noqa: F401 (to_jsonl: the file format)

# --------------------------------------------------------------------------------------------------------
# Labels and oracle
# --------------------------------------------------------------------------------------------------------

# Also the precedence order: the oracle returns the first label whose cues occur; "other" has none.
LABELS = ("technical", "refund", "billing", "account", "shipping", "other")

# Cue words per label, matched on the lower-cased message. Every template of the generator is checked
# against these tables (generation fails loudly when a phrasing would be labelled differently).
CUES: dict[str, re.Pattern[str]] = {
    "technical": re.compile(
        r"\b(?:crash\w*|errors?|bugs?|buggy|freez\w*|frozen|glitch\w*|blank (?:screen|page)|spinning"
        r"|times? out|timing out)\b"
        r"|\b(?:won't|doesn't|does not|don't|will not|never|fails? to|not) load(?:s|ing)?\b"
    ),
    "refund": re.compile(r"\b(?:refund\w*|money back|reimburs\w*|return(?:s|ed|ing)?)\b"),
    "billing": re.compile(
        r"\b(?:charg(?:e|ed|es|ing)|overcharged|invoices?|receipts?|bill(?:s|ed|ing)?|payments?|pay|paid"
        r"|paying|cards?|prices?|fees?|subscriptions?|vat|direct debit|debited)\b"
    ),
    "account": re.compile(
        r"\b(?:accounts?|password|log ?in|logging in|sign ?in|username|email address|two-factor|2fa"
        r"|verification code|locked|profile|hacked)\b"
    ),
    "shipping": re.compile(
        r"\b(?:parcels?|packages?|deliver\w*|courier|tracking|track|ship|shipp\w*|dispatch\w*|arriv\w*"
        r"|postage|customs)\b"
    ),
}

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "support.jsonl"


def oracle(message: str) -> str:
    """The label of ``message``: the first of LABELS whose cue words (``CUES``) occur, else ``other``.

    Precedence, highest first, and what each label's cues are about:

    1. ``technical``: something malfunctions (crash, error, bug, freezes, won't load, blank screen, times
       out) -- whatever it is about: "the refund form won't load" is technical.
    2. ``refund``: money back (refund, money back, reimburse, return an item) -- "please refund the double
       charge on my card" is a refund, not billing.
    3. ``billing``: charges, invoices, receipts, payments, cards, prices, fees, subscriptions, VAT.
    4. ``account``: the customer account (account, password, log in, sign in, username, email address,
       two-factor, verification code, locked, profile, hacked).
    5. ``shipping``: parcels, packages, delivery, couriers, tracking, dispatch, arrival, customs.
    6. ``other``: none of the above (shops, opening hours, stock, discounts, jobs, compliments).
    """
    low = message.lower()
    for label in LABELS[:-1]:
        if CUES[label].search(low):
            return label
    return "other"


# --------------------------------------------------------------------------------------------------------
# Generator: slot values and issues
# --------------------------------------------------------------------------------------------------------

# Shared by several labels on purpose: a product, an order number or a city says nothing about the label.
PRODUCTS = (
    "speaker",
    "blender",
    "rain jacket",
    "coffee machine",
    "desk lamp",
    "smartwatch",
    "backpack",
    "phone case",
    "kettle",
    "yoga mat",
    "office chair",
    "suitcase",
)
CITIES = ("Amsterdam", "Berlin", "Dublin", "Lisbon", "London", "Madrid", "Paris", "Rome", "Vienna", "Oslo")
APPS = ("the app", "the Android app", "the iPhone app", "the tablet app")
SITES = ("the website", "your site", "the mobile site", "your web shop")
WHEN = ("yesterday", "last week", "two weeks ago", "on Monday", "ten days ago", "last month")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
AMOUNTS = ("$12", "$25", "$40", "$9.99", "19 euros", "35 euros", "£15", "£60")
ERROR_CODES = ("500", "502", "404", "E17", "E42", "403")
COLOURS = ("blue", "black", "green", "red", "white", "grey")
WAITED = ("three", "five", "ten", "twelve", "4", "6", "8", "9")

# label -> issues; an issue is a list of paraphrases (format strings over the slots above). A family is
# one issue with one set of slot values, said 2-3 different ways (each with its own opener and ending).
ISSUES: dict[str, list[list[str]]] = {
    "technical": [
        [
            "{app} crashes every time I open it",
            "{app} keeps crashing on startup",
            "every time I launch {app} it crashes",
            "{app} crashed again as soon as I opened it",
        ],
        [
            "I get an error when I try to reset my password",
            "resetting my password gives me an error",
            "the password reset page shows an error",
        ],
        [
            "the tracking page won't load",
            "your tracking page doesn't load for me",
            "the tracking page just shows a blank screen",
        ],
        [
            "{app} freezes when I open my invoices",
            "opening my invoices makes {app} freeze",
            "{app} is frozen on the invoices screen",
        ],
        [
            "the refund form won't load",
            "I can't submit the refund form, it gives an error",
            "the refund request page keeps spinning",
        ],
        [
            "checkout fails with error {code}",
            "I keep getting error {code} at checkout",
            "error {code} when I try to place an order",
        ],
        [
            "the search on {site} is buggy, results never load",
            "there's a bug in the search on {site}",
            "search results on {site} never load",
        ],
        [
            "product photos don't load on {site}",
            "the images on {site} are not loading",
            "none of the pictures load on {site}, it's a glitch",
        ],
        [
            "{app} just shows a blank screen after the update",
            "since the update {app} opens to a blank page",
            "after updating, {app} is stuck on a blank screen",
        ],
        [
            "the payment page times out",
            "your payment page keeps timing out",
            "the page where I pay times out every time",
        ],
        [
            "the {product} page on {site} throws an error",
            "I get an error on the {product} page of {site}",
            "{site} shows an error when I open the {product}",
        ],
        [
            "I can't log in, {app} crashes at the sign in screen",
            "{app} crashes whenever I try to log in",
            "logging in makes {app} crash",
        ],
    ],
    "refund": [
        [
            "I'd like a refund for the {product}",
            "can I get my money back for the {product}?",
            "please refund me for the {product}",
        ],
        [
            "I returned the {product} {when} and still have no refund",
            "I sent the {product} back {when}, where is my refund?",
            "still no refund for the {product} I returned {when}",
        ],
        [
            "please refund the double charge on my card",
            "I was charged twice, I want the extra money back",
            "can you reimburse the second charge on my card?",
        ],
        [
            "the {product} arrived broken, I want my money back",
            "my {product} was delivered damaged, please refund it",
            "the {product} came broken and I'd like a refund",
        ],
        [
            "how do I return the {product}?",
            "I want to return the {product} I bought {when}",
            "what's the process to return my {product}?",
        ],
        [
            "I cancelled my subscription but was not reimbursed",
            "my subscription was cancelled, when do I get my money back?",
            "I ended my subscription {when}, please refund the remaining month",
        ],
        [
            "order {order} never arrived, I'd like a refund instead",
            "please just refund order {order}, it never came",
            "I want my money back for order {order}, it never showed up",
        ],
        [
            "you approved the refund for order {order} {when} but I haven't got it",
            "the refund for order {order} was approved {when} but no money yet",
            "still waiting for the approved refund on order {order}",
        ],
        [
            "is it too late to return something I bought {when}?",
            "can I still return an item bought {when}?",
            "I bought the {product} {when}, can I still return it?",
        ],
        [
            "I was reimbursed the wrong amount for the {product}",
            "my refund for the {product} was only {amount}",
            "the refund I got for the {product} is too small",
        ],
        [
            "the {product} doesn't fit, can I return it for my money back?",
            "I need to return the {product}, it's the wrong size",
            "wrong size {product}, I'd like to return it and get refunded",
        ],
    ],
    "billing": [
        [
            "I was charged twice for order {order}",
            "order {order} shows two charges on my card",
            "you billed me twice for order {order}",
        ],
        [
            "can I get an invoice for order {order}?",
            "please send me the invoice for order {order}",
            "I need a VAT invoice for order {order}",
        ],
        [
            "my card was declined but I have funds",
            "my payment keeps getting declined",
            "why was my card payment declined?",
        ],
        [
            "how do I update the card on my profile?",
            "I want to change the card linked to my account",
            "where can I change the card I pay with?",
        ],
        [
            "why did my subscription price go up?",
            "the subscription now costs {amount}, why?",
            "my subscription fee went up to {amount} without notice",
        ],
        [
            "the receipt for the {product} has the wrong price",
            "the {product} price on my receipt is wrong",
            "my receipt shows the wrong amount for the {product}",
        ],
        [
            "I was charged {amount} for delivery, I thought shipping was free",
            "why was I billed {amount} for shipping?",
            "there's a {amount} delivery fee on my bill I didn't expect",
        ],
        [
            "can I pay by bank transfer?",
            "do you accept PayPal as payment?",
            "which payment methods can I use?",
        ],
        [
            "my invoice has the wrong company name",
            "please correct the company name on my invoice",
            "the name on my invoice is misspelled",
        ],
        [
            "I was charged after my free trial ended",
            "the trial was supposed to be free but I got billed {amount}",
            "you charged me {amount} when the free trial ended",
        ],
        [
            "there's a charge of {amount} I don't recognise",
            "I see an unknown charge of {amount} from you",
            "what is this {amount} charge on my statement?",
        ],
        [
            "I paid for the {product} but the order says unpaid",
            "my payment for the {product} went through but it says not paid",
            "the {product} shows as unpaid although I paid {when}",
        ],
    ],
    "account": [
        [
            "I forgot my password",
            "how do I reset my password?",
            "I can't remember my password",
        ],
        [
            "I'm locked out of my account",
            "my account is locked after too many attempts",
            "it says my account is locked",
        ],
        [
            "how do I change my email address?",
            "I want to update the email address on my account",
            "please change the email address I signed up with",
        ],
        [
            "please delete my account",
            "I want to close my account and remove my data",
            "how can I delete my account?",
        ],
        [
            "I never received the verification code",
            "the verification code doesn't arrive",
            "no verification code came to my phone",
        ],
        [
            "I can't log in to track my parcel",
            "I can't sign in to check on my package",
            "login doesn't work so I can't see my delivery",
        ],
        [
            "how do I turn on two-factor authentication?",
            "can I enable 2FA on my account?",
            "where is the two-factor setting?",
        ],
        [
            "I think my account was hacked",
            "someone hacked my account {when}",
            "my account has been hacked, what do I do?",
        ],
        [
            "can I change my username?",
            "I'd like a different username",
            "how do I rename my username?",
        ],
        [
            "how do I update my profile photo?",
            "I want to change the picture on my profile",
            "where do I edit my profile?",
        ],
        [
            "I have two accounts, can you merge them?",
            "please merge my two accounts into one",
            "can two accounts be combined?",
        ],
    ],
    "shipping": [
        [
            "my parcel hasn't arrived yet",
            "where is my package? It's been {waited} days",
            "order {order} still hasn't arrived",
        ],
        [
            "the courier left my parcel at the wrong address",
            "my package was delivered to the wrong house",
            "the courier delivered order {order} to my neighbour",
        ],
        [
            "can I change the delivery address for order {order}?",
            "I need order {order} delivered to a different address",
            "please deliver order {order} to my office instead",
        ],
        [
            "do you ship to {city}?",
            "can you deliver to {city}?",
            "is delivery to {city} possible?",
        ],
        [
            "when will order {order} be dispatched?",
            "has order {order} shipped yet?",
            "is order {order} dispatched already?",
        ],
        [
            "my tracking number shows no updates for {waited} days",
            "tracking for order {order} hasn't moved in {waited} days",
            "the tracking hasn't updated for {waited} days",
        ],
        [
            "only part of order {order} arrived",
            "half of order {order} was delivered",
            "order {order} arrived with one box missing",
        ],
        [
            "the courier left the {product} out in the rain",
            "the {product} was delivered soaking wet",
            "my {product} arrived wet, the courier left it outside",
        ],
        [
            "can the {product} be delivered on {day}?",
            "I'd like the {product} delivered on {day}",
            "is {day} delivery possible for the {product}?",
        ],
        [
            "my parcel is stuck in customs",
            "my package has been in customs for {waited} days",
            "order {order} is held at customs",
        ],
        [
            "how long does express shipping take?",
            "how fast is express delivery?",
            "with express shipping, when would it arrive?",
        ],
    ],
    "other": [
        [
            "do you have a shop in {city}?",
            "is there a store in {city}?",
            "where is your nearest store to {city}?",
        ],
        [
            "what are your opening hours on {day}?",
            "are you open on {day}?",
            "when do you open on {day}?",
        ],
        [
            "do you sell gift vouchers?",
            "can I buy a gift voucher?",
            "are gift vouchers available?",
        ],
        [
            "I just want to say your staff in {city} were great",
            "thanks to the team in {city}, great service",
            "compliments to your {city} store",
        ],
        [
            "are you hiring in {city}?",
            "do you have any jobs in {city}?",
            "is your {city} store looking for staff?",
        ],
        [
            "will the {product} be back in stock?",
            "when is the {product} available again?",
            "is the {product} coming back soon?",
        ],
        [
            "do you offer a student discount?",
            "is there a discount for students?",
            "can students get a discount?",
        ],
        [
            "is the {product} suitable for children?",
            "can kids use the {product}?",
            "is the {product} safe for a child?",
        ],
        [
            "do you have the {product} in {colour}?",
            "is the {product} available in {colour}?",
            "does the {product} come in {colour}?",
        ],
        [
            "can I reserve the {product} at the {city} store?",
            "could the {city} store hold the {product} for me?",
            "please put the {product} aside for me in {city}",
        ],
        [
            "what's the warranty on the {product}?",
            "how long is the {product} guaranteed?",
            "does the {product} come with a warranty?",
        ],
    ],
}

# Family shares by label (each family yields 2-3 rows, so row shares follow these closely).
_LABEL_WEIGHTS = {"technical": 17, "refund": 17, "billing": 18, "account": 16, "shipping": 18, "other": 14}
# Openers, contexts and endings carry no cue word of any label.
_OPENERS = ["", "", "", "", "Hi, ", "Hello, ", "Hi there, ", "Hey, ", "Good morning, ", "Hello team, "]
# The issue starts a new sentence only after a context ending in ". ".
_CONTEXTS = [
    "",
    "",
    "",
    "",
    "",
    "I've been a customer for years. ",
    "quick question: ",
    "sorry to bother you, ",
]
_TERMINATORS = ["", ".", ".", "!"]  # for issues that are not questions
_CONNECTORS = ["Also, ", "And ", "Plus, ", "On top of that, ", "Oh, and ", "", ""]
# Share of families (of every label but "other") that add a sentence about a lower-precedence topic.
_SECOND_ISSUE_SHARE = 0.4
_TAILS = ["", "", "", "", " Thanks.", " Thank you!", " Please help.", " Any news?", " Cheers."]
_SLOTS: dict[str, tuple[str, ...]] = {
    "product": PRODUCTS,
    "city": CITIES,
    "app": APPS,
    "site": SITES,
    "when": WHEN,
    "day": DAYS,
    "amount": AMOUNTS,
    "code": ERROR_CODES,
    "colour": COLOURS,
    "waited": WAITED,
}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _say(rng: random.Random, issues: list[list[str]], values: dict[str, str]) -> str:
    """One phrasing: an optional opener and context, the issue sentence(s) in random order joined by a
    connector, an optional ending; the case is varied a little."""
    sentences = [rng.choice(templates).format(**values) for templates in issues]
    rng.shuffle(sentences)
    body = sentences[0]
    for sentence in sentences[1:]:
        if not body.endswith("?"):
            body += rng.choice(_TERMINATORS[1:])
        connector = rng.choice(_CONNECTORS)
        body += " " + connector + (sentence if connector else _capitalise(sentence))
    opener, context = rng.choice(_OPENERS), rng.choice(_CONTEXTS)
    prefix = opener + (context if opener else _capitalise(context))
    if not prefix or prefix.endswith(". "):  # a sentence starts here
        body = _capitalise(body)
    text = prefix + body
    if not text.endswith("?"):
        text += rng.choice(_TERMINATORS)
    if text[-1] in ".!?":
        text += rng.choice(_TAILS)
    if rng.random() < 0.06:
        text = text.lower()
    return text


class _Family:
    """One paraphrase family: a label, its phrasings and slot values. (A plain class, not a dataclass:
    ``@dataclass`` looks the module up in ``sys.modules``, which a bare ``spec_from_file_location`` load
    does not populate.)"""

    __slots__ = ("issue", "label", "say")

    def __init__(self, label: str, issue: str, say: Callable[[random.Random], str]) -> None:
        self.label, self.issue, self.say = label, issue, say


def _sample_family(rng: random.Random) -> _Family:
    label = rng.choices(list(_LABEL_WEIGHTS), weights=list(_LABEL_WEIGHTS.values()))[0]
    index = rng.randrange(len(ISSUES[label]))
    issues = [ISSUES[label][index]]
    lower = LABELS[LABELS.index(label) + 1 :]
    if lower and rng.random() < _SECOND_ISSUE_SHARE:  # a second topic of lower precedence: label unchanged
        issues.append(rng.choice(ISSUES[rng.choice(lower)]))
    values = {name: rng.choice(options) for name, options in _SLOTS.items()}
    values["order"] = str(rng.randint(10000, 99999))
    return _Family(label, f"{label}-{index + 1:02d}", lambda r: _say(r, issues, values))


def _label(family: _Family, prompt: str) -> dict[str, str]:
    """The row's completion: the oracle's label, which must be the one the generator meant."""
    labelled = oracle(prompt)
    if labelled != family.label:
        raise RuntimeError(
            f"oracle disagrees with generator for {prompt!r}: oracle {labelled}, intended {family.label}"
        )
    return {"completion": labelled}


def generate(n: int = 1500, seed: int = 7) -> list[dict]:
    """``n`` labelled rows from ``random.Random(seed)``; see the module docstring.

    Rows come in paraphrase families of 2-3 (sharing ``group`` and the label); no prompt appears twice.
    Raises ``RuntimeError`` if the oracle's label for any phrasing differs from the generator's.
    """
    return family_rows(
        "support",
        n,
        seed,
        sample=_sample_family,
        say=lambda rng, family: family.say(rng),
        label=_label,
        ignore_case=True,
    )


main = command_line(generate, DEFAULT_OUT, "Generate (or --check) the support classification data.")

if __name__ == "__main__":
    sys.exit(main())
