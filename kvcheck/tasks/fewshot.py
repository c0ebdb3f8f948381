"""``fewshot`` — few-shot topic classification (in the spirit of LongBench's TREC): labelled example
sentences ("Text: … / Topic: sports") fill the prompt up to the target length, and the model labels
one more sentence. Sentences are a subject and a predicate drawn from the topic's own lists, so each
topic has 36 sentences. The examples come in rounds of one per topic (so every topic is shown from
the first round on), cycling past the last round at long lengths; the query sentence is never among
them, and the prompt gives no list of the topics: the label set is only in the examples. Scored with
LongBench's classification score (the topic named in the first output line, among the topics).
"""
from __future__ import annotations

import random

from ..errors import KvcheckError
from ..metrics.scoring import classification_score, first_line
from .base import Sample, Task, register_task
from .multikey import count_tokens, largest_fit

TOPICS = {
    "sports": (["The striker", "The goalkeeper", "The home team", "The tennis champion", "The young sprinter",
                "The hockey coach"],
               ["scored twice in the final minutes of the match.", "won the league title after a penalty shootout.",
                "trained on the pitch every morning before the season.", "broke the world record in the relay race.",
                "was sent off by the referee in the second half.", "lifted the cup in front of the cheering fans."]),
    "weather": (["The forecast", "A cold front", "The morning fog", "A tropical storm", "The heavy rain",
                 "A strong wind from the north"],
                ["brought snow and freezing temperatures to the valley.", "is expected to clear by the afternoon.",
                 "caused flooding in the low streets near the river.", "pushed the humidity above ninety percent.",
                 "left the sky cloudy with a chance of thunder.", "made the roads icy before sunrise."]),
    "food": (["The chef", "My grandmother", "The bakery on the corner", "The new restaurant", "The cook",
              "The pastry student"],
             ["served a spicy soup with fresh bread and butter.", "roasted the chicken with garlic and lemon.",
              "baked a chocolate cake with cream on top.", "made the pasta sauce from ripe tomatoes.",
              "fried the onions slowly until they were sweet.", "mixed the flour, sugar and eggs for the pancakes."]),
    "music": (["The orchestra", "The guitarist", "The choir", "The jazz band", "The young pianist",
               "The singer"],
              ["played the symphony without a single wrong note.", "recorded a new album of love songs.",
               "tuned the strings before the concert began.", "sang the chorus twice at the end of the show.",
               "practised the scales on the keyboard every evening.", "performed the melody in a minor key."]),
    "science": (["The chemist", "The research team", "The biologist", "The physics lab", "The astronomer",
                 "The geologist"],
                ["measured the reaction rate in the experiment.", "published the results of the study in a journal.",
                 "observed the cells under the microscope.", "tested the hypothesis with a controlled trial.",
                 "analysed the samples of rock from the crater.", "recorded the data from the telescope all night."]),
}
HEAD = "Classify the topic of each text. Here are some examples.\n\n"
EXAMPLE = "Text: {text}\nTopic: {label}\n\n"
QUERY = "Text: {text}\nTopic:"


def sentences(topic: str) -> list[str]:
    subjects, predicates = TOPICS[topic]
    return [f"{s} {p}" for s in subjects for p in predicates]


def score(sample: Sample, output: str) -> float:
    return classification_score(first_line(output), sample.answer, all_classes=sample.meta["all_classes"])


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"fewshot-{length}-{seed}")
    topics = list(TOPICS)
    out = []
    for i in range(n):
        label = topics[i % len(topics)]  # every topic asked equally often
        query = rng.choice(sentences(label))
        by_topic = {t: rng.sample([s for s in sentences(t) if s != query], len(sentences(t)) - (t == label))
                    for t in topics}
        examples = []  # rounds of one example per topic, each round in its own order
        for r in range(max(map(len, by_topic.values()))):
            batch = [(t, by_topic[t][r]) for t in topics if r < len(by_topic[t])]
            rng.shuffle(batch)
            examples += batch

        def build(k: int) -> str:  # cycles through the examples past the last one
            return (HEAD + "".join(EXAMPLE.format(text=s, label=t) for t, s in
                                   (examples[j % len(examples)] for j in range(k))) + QUERY.format(text=query))

        k = largest_fit(lambda m: count_tokens(tokenizer, build(m)), length, lo=len(topics))
        if k < len(topics):
            raise KvcheckError(f"--length {length} is too short for the fewshot task's examples "
                               f"(one per topic takes {count_tokens(tokenizer, build(len(topics)))} tokens); "
                               "use a longer --length.")
        out.append(Sample(id=f"fewshot-L{length}-s{seed}-{i:03d}", prompt=build(k), answer=label, task="fewshot",
                          task_type="Few-shot", meta={"all_classes": topics, "examples": k, "text": query}))
    return out


FEWSHOT = register_task(Task("fewshot", "Few-shot", make, score, max_new_tokens=4))
