"""The seed problem: the article's model and data, its naive double loop, and the benchmark."""
