"""Extractive baselines that need no model."""

from __future__ import annotations

from sumtune.metrics import split_sentences

LEAD_SENTENCES = 3


def lead3(article: str) -> str:
    """Return the first three sentences of the article, joined by newlines.

    This is the usual CNN/DailyMail Lead-3 (See et al., 2017): the first three sentences of
    the article text as given, with no cleaning. A dateline such as "(CNN)" or
    "London, England (CNN) --" stays in the first sentence. In the Hugging Face
    `cnn_dailymail` 3.0.0 text, a Daily Mail byline such as "By . Daily Mail Reporter .
    PUBLISHED: ..." splits into several short sentences that count toward the three.
    Sentences come from `split_sentences`, so an article that contains newlines is read
    as one sentence per line. An article with fewer than three sentences is returned whole.
    """
    return "\n".join(split_sentences(article)[:LEAD_SENTENCES])
