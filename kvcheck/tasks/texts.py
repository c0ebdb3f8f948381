"""Natural-language passages shipped with kvcheck (written for it), for the fidelity and length-drift
suites: deterministic, offline, and long enough to be compressed."""
from __future__ import annotations

from .base import Sample

PASSAGES = [
    "The lighthouse on the northern cape was built in 1873, after three ships were lost on the reef in a "
    "single winter. Its keeper lived in a small stone house at the foot of the tower with his wife and two "
    "daughters. Every evening he climbed the one hundred and twelve steps to light the lamp, and every "
    "morning he climbed them again to trim the wick and polish the great lens. Supplies came by boat once a "
    "month when the weather allowed, and in the worst storms the family lived for weeks on salted fish, "
    "potatoes from their garden and the milk of a single stubborn goat. The younger daughter kept a diary of "
    "every ship that passed, and her notebooks, now held in the town museum, record more than four thousand "
    "vessels over eleven years.",
    "Bread rises because yeast, a single-celled fungus, feeds on the sugars in flour and releases carbon "
    "dioxide. Kneading stretches the gluten proteins into long elastic strands that trap the gas in small "
    "pockets, so the dough swells instead of letting the bubbles escape. Temperature matters a great deal: "
    "yeast is sluggish in a cold kitchen and dies above about sixty degrees Celsius. Bakers often let dough "
    "rise slowly overnight in a cool place, because a long fermentation gives the bacteria in the dough time "
    "to produce acids and aromatic compounds that make the crust darker and the flavour deeper. Salt slows "
    "the yeast down, which is why it is weighed as carefully as the flour.",
    "When the city council voted to close the old market square to cars, shop owners predicted ruin. They "
    "argued that customers would not walk two streets from the nearest car park carrying heavy bags. For the "
    "first six months sales did fall slightly, but then something unexpected happened. Cafes put tables "
    "outside, a weekly farmers market moved into the square, and families began to spend whole afternoons "
    "there. By the end of the second year foot traffic had doubled and most shops reported higher takings "
    "than before the change. Several other towns in the region have since sent planners to study the "
    "scheme, although critics point out that the square had unusually good public transport to begin with.",
    "A glacier is a river of ice that moves under its own weight. Snow that survives the summer is buried by "
    "the next year's snow, and over decades the pressure squeezes out the air and turns it into dense blue "
    "ice. Once the ice is thick enough, usually a few dozen metres, it begins to deform and flow downhill, "
    "sometimes only a few centimetres a day and sometimes several metres. As it moves it plucks rocks from "
    "the valley floor and grinds them against the bedrock, carving the wide U-shaped valleys that remain "
    "long after the ice has melted. Scientists measure the health of a glacier by comparing the snow it "
    "gains in winter with the ice it loses in summer.",
    "The chess club met every Thursday in the back room of the public library. Its oldest member, a retired "
    "railway engineer, had played in the national championship forty years earlier and still remembered "
    "every move of the game he lost in the final round. He taught the beginners patiently, insisting that "
    "they learn endgames before openings, because, as he liked to say, you cannot plan a journey if you do "
    "not know where you want to arrive. The youngest member was nine years old and beat him for the first "
    "time in the spring, with a knight sacrifice he had shown her himself the previous autumn. He framed the "
    "score sheet and hung it above the door.",
    "Honeybees communicate the location of food through a movement known as the waggle dance. A forager "
    "returning to the hive runs in a straight line across the vertical comb while shaking her abdomen, then "
    "circles back and repeats the run. The angle of the run relative to straight up tells the other bees "
    "the direction of the food relative to the sun, and the duration of the waggle tells them the distance. "
    "Bees that follow the dance closely can find a patch of flowers several kilometres away on their first "
    "attempt. The dance was decoded in the 1940s by an Austrian biologist who later shared a Nobel Prize for "
    "his work on animal behaviour.",
    "Early maps of the coast were drawn by sailors who measured depth with a weighted rope and position with "
    "the stars. Errors of several kilometres were common, and some islands appeared on charts for a century "
    "before anyone noticed that they did not exist. The arrival of accurate clocks at sea changed this, "
    "because a navigator who knew the exact time at his home port could calculate longitude from the "
    "position of the sun. Survey ships spent years working along the coastline, and their charts were so "
    "careful that some are still consulted today for the shape of harbours that have since silted up.",
    "The orchestra had rehearsed the symphony for three weeks, but on the night of the concert the principal "
    "cellist fell ill. Her replacement, a student who had never played the piece in public, arrived an hour "
    "before the performance and read through the score in a corridor. The conductor changed nothing, "
    "trusting that the young musician would follow the section. During the slow movement, which opens with a "
    "long cello solo, the hall was completely silent. The review in the next morning's paper did not mention "
    "the substitution at all; it only praised the warmth of the cello line and the courage of the tempo.",
]

INSTRUCTIONS = [  # one-sentence answers: room below the drift cap for an answer to grow
    "In one sentence, what is this passage about?",
    "In one sentence, who or what is this passage about?",
    "In one sentence, what happens in this passage?",
    "In one sentence, what can we learn from this passage?",
]


def passage_text(i: int, n_paragraphs: int = 3) -> str:
    """Text ``i``: ``n_paragraphs`` passages starting at ``i``, cycling through the collection."""
    return "\n\n".join(PASSAGES[(i + k) % len(PASSAGES)] for k in range(n_paragraphs))


def open_ended(n: int, n_paragraphs: int = 1) -> list[Sample]:
    """Open-ended instruction prompts over passages, through the chat template (no reference answer).
    Prompt i asks instruction i mod 4 about the passages from (i + i // 8) mod 8: the first 32 are
    distinct (every instruction with every starting passage), then they repeat."""
    out = []
    for i in range(n):
        instruction = INSTRUCTIONS[i % len(INSTRUCTIONS)]
        start = (i + i // len(PASSAGES)) % len(PASSAGES)
        prompt = f"{instruction}\n\n{passage_text(start, n_paragraphs)}"
        out.append(Sample(id=f"open-{i:03d}", prompt=prompt, answer="", task="open_ended",
                          task_type="Open-ended", chat=True))
    return out
