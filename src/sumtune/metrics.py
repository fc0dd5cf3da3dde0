"""ROUGE scoring for summaries: sentence splitting, F1 means, bootstrap intervals and tables.

All scores are F1 values multiplied by 100, so they range from 0 to 100 and match the way
summarization papers report ROUGE. ROUGE comes from Google's `rouge-score` package (written
against version 0.1.2) with the Porter stemmer on, which reimplements the ROUGE-1.5.5 Perl script.

`rougeL` is the LCS over each text taken as one token sequence. `rougeLsum` is the
summary-level LCS over sentences, which rouge-score reads as newline-separated lines, so both
texts are split with `split_sentences` first. Without that split, rougeLsum silently equals
rougeL.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sumtune.errors import DataError, SumtuneError

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Lowercased abbreviation types without their final period, in the form that Punkt compares
# against. Words that also end ordinary sentences ("ill", "wed", "sun", "mass", "ore") are
# left out on purpose: listing them would merge every sentence that ends with one of them,
# while leaving them out only adds a split after their rarer use as an abbreviation.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms messrs mme mlle dr prof rev hon sr jr st mt ft
    gen lt col maj capt cpt sgt cpl pvt pfc spc adm cmdr cdr brig lieut det insp supt
    gov sen rep pres amb
    jan feb mar apr jun jul aug sep sept oct nov dec tues thurs
    inc corp co ltd plc bros llc dept assn univ
    no nos vs etc al approx fig figs vol ave blvd rd ph.d
    ala ariz ark calif colo conn fla ga kan kans ky md mich minn mo mont neb nev okla pa penn
    tenn tex va vt wis wyo
    """.split()
) | frozenset("abcdefghijklmnopqrstuvwxyz")

# Dotted initials and acronyms: "u.s", "d.c", "b.b", "j.r.r", "a.m", "e.g".
_DOTTED_LETTERS = re.compile(r"[a-z](?:\.[a-z])+")

# A capitalized word from this list after an abbreviation ends the sentence, as in
# "moved to the U.S. The next day". Punkt checks this list only after abbreviations that are
# not single-letter initials.
_SENTENCE_STARTERS = frozenset(
    """
    the a an he she it its they we i you his her their our this that these those there
    but and so however meanwhile in on at after when while as if
    """.split()
)

# Characters that Punkt leaves attached to the front of a word, as in "'Mr." or "(e.g.".
_LEADING_PUNCTUATION = "\"'([{\u2018\u201c"


class _AbbreviationTypes(set):
    """Punkt's `abbrev_types` set that also accepts any run of dotted single letters.

    Punkt (nltk 3.10) only tests membership with `in`, so overriding `__contains__` lets
    it recognize "B.B." or "J.R.R." without listing every acronym.
    """

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        bare = word.lstrip(_LEADING_PUNCTUATION)
        return super().__contains__(bare) or _DOTTED_LETTERS.fullmatch(bare) is not None


@functools.cache
def _punkt_tokenizer():
    # nltk is imported here because only sentence splitting needs it.
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    parameters = PunktParameters()
    parameters.abbrev_types = _AbbreviationTypes(_ABBREVIATIONS)
    parameters.sent_starters = set(_SENTENCE_STARTERS)
    # Punkt gets no training text and no downloaded model, only the parameters above.
    return PunktSentenceTokenizer(parameters)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences without downloading any model.

    A text that contains a newline is taken as already split, one sentence per line, and
    only loses its blank lines and surrounding whitespace. Other text goes through nltk's
    Punkt tokenizer with a fixed list of English abbreviations. The period inside a decimal
    such as "3.5" and the period after an initial such as "J." never end a sentence.
    Abbreviations such as "Dr.", "U.S." and "Jan." end one only when a common sentence
    starter such as "The" or "He" follows, so "in the U.S. Officials said" stays one
    sentence. Tokenized lowercase text whose sentences are separated by " . " splits at
    each " . ".
    """
    if "\n" in text:
        return [line.strip() for line in text.splitlines() if line.strip()]

    stripped = text.strip()
    if not stripped:
        return []
    return [sentence.strip() for sentence in _punkt_tokenizer().tokenize(stripped)]


@dataclass(frozen=True)
class RougeResult:
    """ROUGE F1 scores (x100) of a set of predictions against their references.

    `per_example` maps each name in `ROUGE_TYPES` to a float array with one F1 x100 per
    example, in input order. `means` maps the same names to the mean of that array.
    """

    per_example: dict[str, np.ndarray]
    means: dict[str, float]
    count: int

    def to_dict(self) -> dict[str, float | int]:
        """Return the means as plain floats plus `count`, ready for `json.dumps`."""
        output: dict[str, float | int] = {name: float(self.means[name]) for name in ROUGE_TYPES}
        output["count"] = self.count
        return output


class _CachedStemmer:
    """nltk's Porter stemmer with a cache of stemmed words.

    rouge-score 0.1.2 with `use_stemmer=True` stems every token of every text again with
    `nltk.stem.porter.PorterStemmer()`, which took about half of the scoring time in a
    profile of 300 FRANK summaries. The cache leaves the tokens unchanged, which a test
    checks against the plain scorer.
    """

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = functools.lru_cache(maxsize=1 << 18)(PorterStemmer().stem)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer, tokenize, tokenizers

    class CachedStemTokenizer(tokenizers.Tokenizer):
        def __init__(self) -> None:
            self._stemmer = _CachedStemmer()

        def tokenize(self, text: str) -> list[str]:
            return tokenize.tokenize(text, self._stemmer)

    # `use_stemmer` is ignored once a tokenizer is given, so it is the tokenizer that stems.
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CachedStemTokenizer())


def _validate_texts(texts: Sequence[str], name: str) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"{name}[{index}] is {type(text).__name__} {text!r}, expected a string; "
                "pass one summary string per example"
            )


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> RougeResult:
    """Score each prediction against its reference with ROUGE-1, -2, -L and -Lsum.

    Both texts are split with `split_sentences` and joined with newlines, which rougeLsum
    needs and which the other three types ignore. rouge-score lowercases the text and
    replaces every character outside a-z and 0-9 with a space, so case and punctuation
    never count, and letters with accents or in other scripts are dropped entirely.
    An empty prediction scores 0.

    Raises DataError when the two sequences differ in length or are empty, or when an
    element is not a string.
    """
    if len(predictions) != len(references):
        raise DataError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "pass exactly one reference per prediction"
        )
    if len(predictions) == 0:
        raise DataError("got 0 predictions; ROUGE needs at least one prediction and reference")
    _validate_texts(predictions, "predictions")
    _validate_texts(references, "references")

    scorer = _rouge_scorer()
    scores = {name: np.empty(len(predictions), dtype=np.float64) for name in ROUGE_TYPES}
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        # rouge-score takes the reference ("target") first.
        example = scorer.score(
            "\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction))
        )
        for name in ROUGE_TYPES:
            scores[name][index] = example[name].fmeasure * 100.0

    means = {name: float(values.mean()) for name, values in scores.items()}
    return RougeResult(per_example=scores, means=means, count=len(predictions))


def bootstrap_intervals(
    per_example: RougeResult | Mapping[str, Sequence[float] | np.ndarray],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Compute percentile bootstrap confidence intervals of the mean of each metric.

    `per_example` is a RougeResult or a mapping from metric name to per-example scores,
    all of the same length. Each resample draws example indices with replacement and uses
    the same indices for every metric. Returns `{metric: (low, high)}` in the units of the
    input, so x100 for a RougeResult. The same seed gives the same intervals.
    """
    arrays = per_example.per_example if isinstance(per_example, RougeResult) else per_example
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise SumtuneError(f"n_resamples is {n_resamples!r}, expected an integer of at least 1")
    if not 0.0 < confidence < 1.0:
        raise SumtuneError(f"confidence is {confidence!r}, expected a fraction between 0 and 1")
    if not arrays:
        raise DataError("no metrics to bootstrap; pass at least one metric with scores")

    names = list(arrays)
    columns = [np.asarray(arrays[name], dtype=np.float64).reshape(-1) for name in names]
    sizes = {name: column.size for name, column in zip(names, columns)}
    if len(set(sizes.values())) != 1:
        raise DataError(f"metrics have different numbers of scores {sizes}; expected equal lengths")
    size = columns[0].size
    if size == 0:
        raise DataError("no scores to bootstrap; pass at least one example")

    matrix = np.stack(columns)
    rng = np.random.default_rng(seed)
    resampled_means = np.empty((len(names), n_resamples), dtype=np.float64)
    # Resamples are drawn in chunks to bound the index matrix at about 4 million entries,
    # which keeps 1000 resamples of the 11,490-example CNN/DM test split within memory.
    chunk = max(1, 4_000_000 // size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        indices = rng.integers(0, size, size=(stop - start, size))
        resampled_means[:, start:stop] = matrix[:, indices].mean(axis=2)

    tail = (1.0 - confidence) / 2.0
    bounds = np.quantile(resampled_means, [tail, 1.0 - tail], axis=1)
    return {name: (float(bounds[0, i]), float(bounds[1, i])) for i, name in enumerate(names)}


def mean_length(texts: Sequence[str]) -> float:
    """Return the mean number of whitespace-separated words per text.

    Raises DataError for an empty sequence, whose mean is undefined.
    """
    if len(texts) == 0:
        raise DataError("got 0 texts; the mean length needs at least one text")
    return float(np.mean([len(text.split()) for text in texts]))


def _format_interval(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def format_rouge_table(
    result: RougeResult,
    intervals: Mapping[str, tuple[float, float]] | None = None,
    *,
    confidence: float = 0.95,
) -> str:
    """Format one result as a plain text table with one row per ROUGE type.

    Columns are the metric, the mean F1 x100 and, when `intervals` is given, the
    confidence interval. `confidence` only sets the interval column's header. The last
    line gives the number of examples.
    """
    header = f"{'metric':<10} {'F1 x100':>8}"
    if intervals is not None:
        header += f"  {confidence * 100:g}% CI"
    lines = [header]
    for name in ROUGE_TYPES:
        line = f"{name:<10} {result.means[name]:>8.2f}"
        if intervals is not None:
            line += f"  {_format_interval(intervals.get(name))}"
        lines.append(line)
    lines.append(f"examples: {result.count}")
    return "\n".join(lines)


def format_grouped_rouge_table(
    results: Mapping[str, RougeResult],
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    *,
    group_header: str = "group",
) -> str:
    """Format several results as one plain text table with one row per group.

    Columns are the group name, the mean F1 x100 of each ROUGE type and the number of
    examples. When `intervals` maps a group to its intervals, each score is followed by
    its interval in brackets.
    """
    width = max([len(group_header), *(len(str(group)) for group in results)])
    score_width = 8 if intervals is None else 25
    score_headers = " ".join(f"{name:>{score_width}}" for name in ROUGE_TYPES)
    lines = [f"{group_header:<{width}} {score_headers} {'count':>7}"]
    for group, result in results.items():
        cells = []
        for name in ROUGE_TYPES:
            cell = f"{result.means[name]:.2f}"
            if intervals is not None and group in intervals:
                cell += f" {_format_interval(intervals[group].get(name))}"
            cells.append(f"{cell:>{score_width}}")
        lines.append(f"{str(group):<{width}} " + " ".join(cells) + f" {result.count:>7}")
    return "\n".join(lines)
