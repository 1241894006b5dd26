"""PII scrubbing: throughput (MB/s, one core) and precision/recall beside Presidio.

Reproduce:  python benchmarks/pii_scrub.py --size-mb 100
Writes benchmarks/results/pii_scrub.md.

1. Throughput of the full upload pipeline (`validate_and_scrub`: JSON parse, format
   checks, scrub, re-serialise) over a generated --size-mb chat JSONL corpus.
2. Text-only throughput, ours vs presidio-analyzer's predefined *pattern*
   recognizers (no NER model: Email, Phone, CreditCard, Iban, UsSsn, Ip, Url;
   called as recognizer.analyze(text, entities, nlp_artifacts=None)), on the same
   --presidio-mb slice of message texts. Presidio is timed on that slice only;
   its MB/s is extrapolated from it.
3. Precision/recall per entity type on a labeled corpus (gold offsets known),
   a detection counts when it overlaps a gold span of the same type.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "benchmarks")]

from pii_corpus import iter_jsonl, make_example  # noqa: E402

from longtune.datasets.limits import DatasetLimits  # noqa: E402
from longtune.datasets.pii import PiiScrubber  # noqa: E402
from longtune.datasets.validation import validate_and_scrub  # noqa: E402

STRUCTURED = ["CREDIT_CARD", "IBAN", "US_SSN", "EMAIL", "IP_ADDRESS"]
COMPARED = STRUCTURED + ["PHONE"]
SECRETS = ["AWS_ACCESS_KEY", "AWS_SECRET_KEY", "API_TOKEN", "JWT"]
PRESIDIO_TO_OURS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
}


class _CountingSink(io.RawIOBase):
    def __init__(self):
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)


def presidio_recognizers():
    logging.getLogger("tldextract").setLevel(
        logging.CRITICAL
    )  # offline: falls back to its snapshot
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    return [
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
    ]


def presidio_detect(recognizers, text: str) -> list[tuple[int, int, str]]:
    found = []
    for recognizer in recognizers:
        for result in recognizer.analyze(text, recognizer.supported_entities, None):
            found.append(
                (
                    result.start,
                    result.end,
                    PRESIDIO_TO_OURS.get(result.entity_type, result.entity_type),
                )
            )
    return found


def ours_detect(scrubber: PiiScrubber, text: str) -> list[tuple[int, int, str]]:
    return [(s, e, ent) for s, e, ent, _ in scrubber.detect(text)]


def labeled_corpus(n_examples: int, seed: int):
    rng = random.Random(seed)
    texts, golds = [], []
    for _ in range(n_examples):
        example, labels = make_example(rng)
        for message, spans in zip(example["messages"], labels, strict=True):
            texts.append(message["content"])
            golds.append(spans)
    return texts, golds


def score(detect, texts, golds, types) -> dict[str, tuple[float, float, int]]:
    tp_gold, fn, tp_pred, fp = Counter(), Counter(), Counter(), Counter()
    for text, gold in zip(texts, golds, strict=True):
        pred = [p for p in detect(text) if p[2] in types]
        for g in gold:
            hit = any(p[2] == g[2] and p[0] < g[1] and g[0] < p[1] for p in pred)
            (tp_gold if hit else fn)[g[2]] += 1
        for p in pred:
            hit = any(p[2] == g[2] and p[0] < g[1] and g[0] < p[1] for g in gold)
            (tp_pred if hit else fp)[p[2]] += 1
    out = {}
    for t in types:
        support = tp_gold[t] + fn[t]
        recall = tp_gold[t] / support if support else float("nan")
        predicted = tp_pred[t] + fp[t]
        precision = tp_pred[t] / predicted if predicted else float("nan")
        out[t] = (precision, recall, support)
    return out


def time_texts(detect, texts) -> float:
    start = time.perf_counter()
    for text in texts:
        detect(text)
    return time.perf_counter() - start


def pipeline_throughput(size_mb: int) -> tuple[float, float, dict]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as handle:
        path = handle.name
        for line in iter_jsonl(size_mb * 1_000_000, seed=1):
            handle.write(line)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as src:
            start = time.perf_counter()
            report = validate_and_scrub(src, _CountingSink(), limits=DatasetLimits())
            elapsed = time.perf_counter() - start
    finally:
        os.unlink(path)
    assert report.valid, report.errors[:3]
    return size / 1e6 / elapsed, elapsed, report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-mb", type=int, default=100, help="generated corpus for pipeline throughput"
    )
    parser.add_argument(
        "--presidio-mb", type=float, default=2.0, help="text slice timed for both detectors"
    )
    parser.add_argument("--labeled-examples", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pii_scrub.md"))
    args = parser.parse_args()
    command = (
        f"python benchmarks/pii_scrub.py --size-mb {args.size_mb} --presidio-mb {args.presidio_mb} "
        f"--labeled-examples {args.labeled_examples}"
    )

    recognizers = presidio_recognizers()
    presidio_detect(recognizers, "warm up a@b.com")  # first call loads tldextract's snapshot

    # 1+2. text-only throughput on the same slice
    rng = random.Random(2)
    slice_texts, slice_bytes = [], 0
    while slice_bytes < args.presidio_mb * 1e6:
        example, _ = make_example(rng)
        for message in example["messages"]:
            slice_texts.append(message["content"])
            slice_bytes += len(message["content"].encode())
    scrubber = PiiScrubber()
    ours_seconds = time_texts(scrubber.scrub_text, slice_texts)
    presidio_seconds = time_texts(lambda t: presidio_detect(recognizers, t), slice_texts)
    ours_text_mbs = slice_bytes / 1e6 / ours_seconds
    presidio_mbs = slice_bytes / 1e6 / presidio_seconds

    pipeline_mbs, pipeline_seconds, report = pipeline_throughput(args.size_mb)

    # 3. precision / recall
    texts, golds = labeled_corpus(args.labeled_examples, seed=3)
    ours_scorer = PiiScrubber()
    ours = score(lambda t: ours_detect(ours_scorer, t), texts, golds, COMPARED + SECRETS)
    theirs = score(lambda t: presidio_detect(recognizers, t), texts, golds, COMPARED)

    lines = [
        "# PII scrub benchmark",
        "",
        f"Reproduce: `{command}` (single process, one core; the dev box has 2 shared cores, so expect noise).",
        "",
        "## Throughput",
        "",
        "| what | data | MB/s |",
        "|---|---|---|",
        f"| ours, full pipeline `validate_and_scrub` (parse, validate, scrub, write) | {args.size_mb} MB generated chat JSONL, "
        f"{pipeline_seconds:.1f} s | {pipeline_mbs:.2f} |",
        f"| ours, `scrub_text` on message texts | {slice_bytes / 1e6:.1f} MB slice | {ours_text_mbs:.2f} |",
        f"| presidio-analyzer {_presidio_version()} pattern recognizers (7, no NER) | same {slice_bytes / 1e6:.1f} MB slice "
        f"(extrapolated) | {presidio_mbs:.3f} |",
        f"| **speed-up, text vs text** | | **{ours_text_mbs / presidio_mbs:.1f}x** |",
        f"| speed-up, our whole pipeline vs Presidio detection only | | {pipeline_mbs / presidio_mbs:.1f}x |",
        "",
        f"Pipeline PII counts on the {args.size_mb} MB corpus: `{json.dumps(report['pii']['counts'])}`",
        "",
        f"## Precision / recall ({args.labeled_examples} labeled conversations, {len(texts)} messages)",
        "",
        "| entity | support | ours P | ours R | Presidio P | Presidio R |",
        "|---|---|---|---|---|---|",
    ]
    for entity in COMPARED + SECRETS:
        p, r, n = ours[entity]
        tp, tr = (
            (f"{theirs[entity][0]:.3f}", f"{theirs[entity][1]:.3f}")
            if entity in theirs
            else ("n/a", "n/a")
        )
        lines.append(f"| {entity} | {n} | {p:.3f} | {r:.3f} | {tp} | {tr} |")
    lines += [
        "",
        "Targets: >= 20x Presidio throughput; recall >= 0.99 and precision >= 0.97 on CREDIT_CARD, IBAN, US_SSN,",
        "EMAIL, IP_ADDRESS. Presidio has no recognizers for the secret types (n/a). PERSON is not measured: no",
        "NER model is installed, so names are not scrubbed by default (see longtune.datasets.pii).",
        "The corpus is synthetic (benchmarks/pii_corpus.py): template sentences with hard negatives",
        "(Luhn-invalid cards, bad-checksum IBANs, 999.x addresses, dates, versions, UUIDs, ISBNs).",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    failed = [e for e in STRUCTURED if ours[e][0] < 0.97 or ours[e][1] < 0.99]
    print(
        "targets:",
        "MET" if not failed and ours_text_mbs >= 20 * presidio_mbs else f"MISSED {failed}",
    )


def _presidio_version() -> str:
    from importlib.metadata import version

    return version("presidio-analyzer")


if __name__ == "__main__":
    main()
