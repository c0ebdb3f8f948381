"""Task types, grouped the way the study groups results, and LongBench's dataset → type map."""

TASK_TYPES = ("QA", "Summarization", "Few-shot", "Synthetic", "Code", "Open-ended")

LONGBENCH_TASK_TYPES = {
    "narrativeqa": "QA", "musique": "QA", "hotpotqa": "QA", "2wikimqa": "QA", "multifieldqa_en": "QA", "qasper": "QA",
    "gov_report": "Summarization", "qmsum": "Summarization", "multi_news": "Summarization",
    "triviaqa": "Few-shot", "samsum": "Few-shot", "trec": "Few-shot",
    "passage_retrieval_en": "Synthetic", "passage_count": "Synthetic",
    "lcc": "Code", "repobench-p": "Code",
}
