"""Task generators (determinism, length control with the real tokenizer, stable ids, answers their own
scorer accepts), the LongBench / RULER loaders on small hand-written files, task specs, and the
``--kvcheck-task`` option."""
from __future__ import annotations

import json
import re

import pytest

from kvcheck.errors import KvcheckError
from kvcheck.tasks import TASKS, get_task, parse_task_spec
from kvcheck.tasks.multikey import count_tokens
from kvcheck.tasks.spec import extra_set, tier_set
from kvcheck.tasks.types import TASK_TYPES
from kvcheck.tiers import TIERS

SYNTHETIC = ["passkey", "multikey", "kv_retrieval", "variable_tracking", "fewshot"]
_MADE: dict = {}


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from kvcheck.model import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(None))


def made(tok, name, length, seed=0, n=2):
    key = (name, length, seed, n)
    if key not in _MADE:
        _MADE[key] = get_task(name).samples(tok, n, length, seed=seed)
    return _MADE[key]


# ---- synthetic generators -------------------------------------------------------------------------

def test_every_builtin_task_is_registered_with_a_known_type():
    assert set(SYNTHETIC) <= set(TASKS)
    assert {TASKS[n].task_type for n in SYNTHETIC} <= set(TASK_TYPES)
    assert TASKS["fewshot"].task_type == "Few-shot" and TASKS["kv_retrieval"].task_type == "Synthetic"


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("length", [512, 1024])
def test_length_within_5_percent_of_target(tok, name, length):
    for s in made(tok, name, length):
        n = count_tokens(tok, s.prompt, s.chat)
        assert 0.95 * length <= n <= length, (s.id, n)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_with_stable_ids(tok, name):
    a = made(tok, name, 512)
    b = get_task(name).samples(tok, 2, 512, seed=0)
    assert [(s.id, s.prompt, s.answer) for s in a] == [(s.id, s.prompt, s.answer) for s in b]
    assert [s.id for s in a] == [f"{name}-L512-s0-000", f"{name}-L512-s0-001"]
    other = made(tok, name, 512, seed=1)
    assert [s.id for s in other] == [f"{name}-L512-s1-000", f"{name}-L512-s1-001"]
    assert [s.prompt for s in other] != [s.prompt for s in a]
    assert a[0].prompt != a[1].prompt
    # a sample's id and content do not depend on how many samples were asked for
    assert get_task(name).samples(tok, 1, 512, seed=0)[0] == a[0]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_scorer_accepts_the_answer_and_rejects_others(tok, name):
    task = get_task(name)
    for s in made(tok, name, 512):
        assert s.task == name and s.task_type == task.task_type
        assert task.score(s, f" {s.answer}.\nmore text") == 1.0
        wrong = "12345" if s.answer != "12345" else "54321"
        if name == "fewshot":
            wrong = next(c for c in s.meta["all_classes"] if c != s.answer)
        assert task.score(s, f" {wrong}") == 0.0
        assert task.score(s, "") == 0.0


@pytest.mark.parametrize("name", ["passkey", "multikey", "kv_retrieval", "variable_tracking"])
def test_retrieval_answers_are_in_the_context(tok, name):
    for s in made(tok, name, 1024):
        assert s.answer in s.prompt[:-60]  # in the text, not only in the question


def test_kv_retrieval_distractors_have_the_form_of_the_target(tok):
    from kvcheck.tasks.kv_retrieval import NUM_PAIRS

    samples = get_task("kv_retrieval").samples(tok, NUM_PAIRS + 1, 512)
    for i, s in enumerate(samples):
        pairs = re.findall(r"The value of key ([0-9a-f]{8}) is (\d{5})\.", s.prompt)
        assert len(pairs) == s.meta["pairs"] == NUM_PAIRS
        assert dict(pairs)[s.meta["key"]] == s.answer
        assert len({k for k, _ in pairs}) == len({v for _, v in pairs}) == len(pairs)
        assert s.prompt.endswith(f"The value of key {s.meta['key']} is")
        # the asked pair cycles through the slots, first to last
        assert [k for k, _ in pairs].index(s.meta["key"]) == i % NUM_PAIRS
        assert i % NUM_PAIRS / NUM_PAIRS <= s.meta["depth"] <= (i % NUM_PAIRS + 1) / NUM_PAIRS


def test_variable_tracking_chain_leads_to_the_answer(tok):
    for s in made(tok, "variable_tracking", 1024):
        text = s.prompt[s.prompt.index("Now the text:"):]
        first, *rest = s.meta["chain"]
        assert f"VAR {first} = {s.answer}." in text
        for a, b in zip(s.meta["chain"], rest):
            assert f"VAR {b} = VAR {a}." in text
        assert s.prompt.endswith(f"VAR {s.meta['chain'][-1]} =")


def test_fewshot_shows_every_topic_and_never_the_query(tok):
    for s in made(tok, "fewshot", 512):
        shown = re.findall(r"Text: (.*)\nTopic: (\w+)", s.prompt)
        assert {t for _, t in shown} == set(s.meta["all_classes"])
        assert s.meta["text"] not in {x for x, _ in shown}
        assert s.prompt.endswith(f"Text: {s.meta['text']}\nTopic:")
    assert [s.answer for s in get_task("fewshot").samples(tok, 5, 256)] == list(s.meta["all_classes"])


def test_bad_sizes(tok):
    with pytest.raises(KvcheckError, match="--samples must be >= 1"):
        get_task("fewshot").samples(tok, 0, 512)
    with pytest.raises(KvcheckError, match="too short"):
        get_task("variable_tracking").samples(tok, 1, 100)


# ---- LongBench / RULER files ----------------------------------------------------------------------

def longbench_row(i, dataset="hotpotqa", context="Passage 1: Paris is the capital of France.", **kw):
    row = {"input": f"What is the capital of France? ({i})", "context": context, "answers": ["Paris"],
           "length": 9, "dataset": dataset, "language": "en", "all_classes": None, "_id": f"id{i:03d}"}
    row.update(kw)
    return row


def write_jsonl(path, rows, raw_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines), encoding="utf-8")
    return path


def test_longbench_loader(tok, tmp_path):
    classes = ["Location", "Food", "Person"]
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        longbench_row(0), longbench_row(1),
        longbench_row(2, dataset="trec", context="Question: Where is Rome?\nType: Location",
                      input="Question: What do pandas eat?\nType:", answers=["Food"], all_classes=classes)])
    spec = parse_task_spec(f"longbench:{path}")
    task = spec.task
    assert (task.name, task.size, task.task_type, task.max_new_tokens) == ("longbench-mixed", 3, "Mixed", 64)
    qa, _, trec = spec.samples(tok, context=8192)
    assert [qa.id, trec.id] == ["longbench-mixed-id000", "longbench-mixed-id002"]
    assert qa.chat and not trec.chat  # LongBench leaves the few-shot and code datasets out of the chat template
    assert (qa.task_type, trec.task_type) == ("QA", "Few-shot")
    assert qa.prompt.startswith("Answer the question based on the given passages.")
    assert qa.prompt.endswith("Question: What is the capital of France? (0)\nAnswer:")
    assert "Paris is the capital" in qa.prompt
    assert task.score(qa, "Paris") == 1.0 and task.score(qa, "The city of Lyon") == 0.0
    assert task.score(trec, "Food\nLocation") == 1.0 and task.score(trec, "Location") == 0.0
    assert [s.id for s in parse_task_spec(f"longbench:{path}@x2").samples(tok, context=8192)] == \
        ["longbench-mixed-id000", "longbench-mixed-id001"]


def test_longbench_long_prompts_keep_both_ends(tok, tmp_path):
    context = " ".join(f"Sentence number {i} of a long passage." for i in range(400))
    path = write_jsonl(tmp_path / "hotpotqa.jsonl", [longbench_row(0, context=context)])
    spec = parse_task_spec(f"longbench:{path}@256")
    assert spec.label == "longbench-hotpotqa-L256"
    (s,) = spec.samples(tok)
    assert 240 <= count_tokens(tok, s.prompt, chat=True) <= 256
    assert s.prompt.startswith("Answer the question based on the given passages.")
    assert s.prompt.endswith("Question: What is the capital of France? (0)\nAnswer:")
    assert "Sentence number 0 " in s.prompt and "Sentence number 200 " not in s.prompt


@pytest.mark.parametrize("lines, message", [
    (['{"input": "q", "context": "c"\n'], r"bad\.jsonl:2 is not valid JSON"),
    (['["a list"]\n'], r"bad\.jsonl:2 is a JSON list, not an object"),
    (['{"input": "q", "context": "c", "dataset": "hotpotqa", "_id": "x"}\n'], r"bad\.jsonl:2 has no 'answers' field"),
    (['{"input": "q", "context": "c", "answers": "Paris", "dataset": "hotpotqa", "_id": "x"}\n'],
     r"field 'answers' is a str, expected a list"),
    ([json.dumps(longbench_row(1, dataset="dureader")) + "\n"], r"dataset 'dureader' is not supported"),
    ([json.dumps(longbench_row(0)) + "\n"], r"_id is repeated"),
    ([json.dumps(longbench_row(1, answers=[])) + "\n"], r"'answers' must be a non-empty list of strings"),
    ([json.dumps(longbench_row(1, dataset="trec")) + "\n"], r"needs 'all_classes'"),
])
def test_longbench_bad_lines(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [longbench_row(0)], lines)
    with pytest.raises(KvcheckError, match=message):
        parse_task_spec(f"longbench:{path}")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(KvcheckError, match=r"LongBench file .*nope\.jsonl does not exist"):
        parse_task_spec(f"longbench:{tmp_path / 'nope.jsonl'}")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(KvcheckError, match="holds no samples"):
        parse_task_spec(f"ruler:{tmp_path / 'empty.jsonl'}")


def ruler_row(i, **kw):
    row = {"index": i, "input": f"Some special magic numbers are hidden. The number for key-{i} is 4242{i}. "
                                "What are all the special magic numbers for key?",
           "outputs": [f"4242{i}"], "length": 30, "answer_prefix": " The special magic numbers are"}
    row.update(kw)
    return row


def test_ruler_loader(tok, tmp_path):
    path = write_jsonl(tmp_path / "niah_single_1" / "validation.jsonl", [ruler_row(0), ruler_row(1)])
    spec = parse_task_spec(f"ruler:{path}")
    task = spec.task
    assert (task.name, task.task_type, task.max_new_tokens, spec.label) == \
        ("ruler-niah_single_1", "Synthetic", 128, "ruler-niah_single_1")
    a, b = spec.samples(tok, context=8192)
    assert (a.id, b.id) == ("ruler-niah_single_1-00000", "ruler-niah_single_1-00001")
    assert a.prompt.endswith("for key? The special magic numbers are") and not a.chat
    assert task.score(a, " 42420 and 7.") == 1.0 and task.score(a, " 42421") == 0.0
    multi = write_jsonl(tmp_path / "niah_multivalue" / "validation.jsonl", [ruler_row(0, outputs=["1", "2"])])
    t = parse_task_spec(f"ruler:{multi}").task
    (s,) = t.samples(tok, None, 1000)
    assert t.score(s, "2 only") == 0.5  # string_match_all: share of the references found
    qa = write_jsonl(tmp_path / "qa_1" / "validation.jsonl", [ruler_row(0, outputs=["Paris", "paris, France"])])
    t = parse_task_spec(f"ruler:{qa}").task
    (s,) = t.samples(tok, None, 1000)
    assert (t.task_type, t.max_new_tokens, t.score(s, "It is Paris.")) == ("QA", 32, 1.0)  # string_match_part
    long = write_jsonl(tmp_path / "vt" / "validation.jsonl", [ruler_row(0, input="VAR X = 1. " * 40)])
    assert parse_task_spec(f"ruler:{long}").samples(tok, context=8192)[0].prompt.startswith("VAR X = 1. VAR")
    with pytest.raises(KvcheckError, match="prompt tokens, over the 64 allowed; RULER prompts are not truncated"):
        parse_task_spec(f"ruler:{long}@64").samples(tok)


@pytest.mark.parametrize("row, message", [
    ({"input": "x", "outputs": ["1"]}, r"validation\.jsonl:2 has no 'index' field"),
    ({"index": 1, "input": "x", "outputs": [1]}, r"'outputs' must be a non-empty list of strings"),
    ({"index": 0, "input": "x", "outputs": ["1"]}, r"index is repeated"),
])
def test_ruler_bad_lines(tmp_path, row, message):
    path = write_jsonl(tmp_path / "vt" / "validation.jsonl", [ruler_row(0), row])
    with pytest.raises(KvcheckError, match=message):
        parse_task_spec(f"ruler:{path}")


# ---- specs ----------------------------------------------------------------------------------------

def test_specs(tmp_path):
    s = parse_task_spec("kv_retrieval@2048x16")
    assert (s.task.name, s.length, s.n, s.label) == ("kv_retrieval", 2048, 16, "kv_retrieval-L2048")
    s = parse_task_spec("passkey")
    assert (s.length, s.n) == (1024, 8)
    assert (parse_task_spec("passkey@x3").n, parse_task_spec("passkey@512").length) == (3, 512)
    assert parse_task_spec("passkey", length=256, n=2).label == "passkey-L256"
    path = write_jsonl(tmp_path / "hotpotqa.jsonl", [longbench_row(0)])
    s = parse_task_spec(f"longbench:{path}@4096x5")
    assert (s.length, s.n, s.label) == (4096, 5, "longbench-hotpotqa-L4096-n5")
    assert extra_set(s).suite == "accuracy-longbench-hotpotqa-L4096-n5"
    ci = tier_set(TIERS["ci"])
    assert ci.suite == "accuracy"
    assert [x.label for x in ci.specs] == ["passkey-L512", "passkey-L1024", "kv_retrieval-L512"]


@pytest.mark.parametrize("text, message", [
    ("passkee", r"unknown task 'passkee'; known tasks: .*fewshot.*longbench:PATH"),
    ("longbnch:data.jsonl", r"unknown task kind 'longbnch'"),
    ("longbench:", r"names no file"),
    ("passkey@big", r"'big' after @ is not a size"),
    ("passkey@", r"'' after @ is not a size"),
    ("@1024", r"empty task"),
])
def test_bad_specs(text, message):
    with pytest.raises(KvcheckError, match=message):
        parse_task_spec(text)


# ---- the --kvcheck-task option ----------------------------------------------------------------------

ACCURACY_TEST = '''
def test_accuracy(kv_method, kv_tasks, kvcheck):
    pass
'''
CONFTEST = '''
import kvcheck
from kvcheck.methods import Full

@kvcheck.method()
def full():
    return Full()
'''


# collection only: no model is loaded (hypothesis' plugin would re-import hypothesis on every in-process run)
COLLECT = ("--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def test_option_adds_task_sets(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_acc=ACCURACY_TEST)
    r = pytester.runpytest_inprocess(*COLLECT)
    assert "test_acc.py::test_accuracy[full]" in r.stdout.str()
    path = write_jsonl(tmp_path / "hotpotqa.jsonl", [longbench_row(0)])
    r = pytester.runpytest_inprocess(*COLLECT,
                                     "--kvcheck-task", f"longbench:{path}@2048", "--kvcheck-task", "fewshot@512x4")
    out = r.stdout.str()
    for node in ("full-tier", "full-longbench-hotpotqa-L2048", "full-fewshot-L512"):
        assert f"test_acc.py::test_accuracy[{node}]" in out
    pytester.makeini(f"[pytest]\nkvcheck_task =\n    longbench:{path}\n")
    r = pytester.runpytest_inprocess(*COLLECT)
    assert "test_accuracy[full-longbench-hotpotqa]" in r.stdout.str()


def test_option_rejects_bad_tasks(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_acc=ACCURACY_TEST)
    r = pytester.runpytest_inprocess(*COLLECT,
                                     "--kvcheck-task", f"longbench:{tmp_path / 'missing.jsonl'}")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "kvcheck: LongBench file" in r.stderr.str() and "does not exist" in r.stderr.str()
    r = pytester.runpytest_inprocess(*COLLECT, "--kvcheck-task", "passkee")
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "unknown task 'passkee'" in r.stderr.str()
