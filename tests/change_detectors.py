"""Change detectors: counts of the data sets that ship with bertdims, as its loaders produce
them today (and as the table in the ``bertdims/data/_embedded.py`` docstring documents them).

Nothing derives these numbers: they are copied from the loaders' output. A test that compares
against them fails when the shipped data (the packages ``bertdims/data/_embedded.py`` reads, at the
pinned versions) or the way the splits are made (repeated texts dropped, the seeded split by
movie or by class, the 10% validation sampling) changes, on purpose or not.

When one fails: find out which change moved the counts. If it was unintended (e.g. another
version of a data package, an edit of the split code), fix that, not the numbers. If it was
intended, update the numbers here, the table in the ``bertdims/data/_embedded.py`` docstring and
the README, and note that results stored with the old splits are not comparable with new
ones (the store keys them by ``data_version``)."""

#: (train, validation, test) examples of each embedded task.
SPLIT_SIZES_CHANGE_DETECTOR = {
    "rotten_tomatoes": (10234, 1215, 1303),
    "bbc_news": (1701, 213, 213),
    "20newsgroups": (10146, 1127, 7528),
    "reuters_r8": (4881, 542, 2189),
    "stsb": (5749, 1500, 1379),
}

#: rotten_tomatoes: distinct movies in (train, validation, test), and the labels of all splits.
ROTTEN_TOMATOES_MOVIES_CHANGE_DETECTOR = (405, 51, 51)
ROTTEN_TOMATOES_LABELS_CHANGE_DETECTOR = {"fresh": 7368, "rotten": 5384}

#: 20newsgroups: rows of train + validation, i.e. Orange's 11,293 train rows less 20 repeated.
NEWSGROUPS_TRAIN_ROWS_CHANGE_DETECTOR = 11293 - 20

#: reuters_r8: the official test file's examples per class (label order of the task).
R8_TEST_CLASSES_CHANGE_DETECTOR = [696, 121, 1083, 10, 81, 87, 36, 75]

#: bbc_news: distinct articles over all splits, 2,225 less 98 exact repeats.
BBC_ARTICLES_CHANGE_DETECTOR = 2225 - 98
