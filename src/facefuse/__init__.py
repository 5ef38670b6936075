"""facefuse: multi-task facial computing (identity, age, gender, race, emotion, attributes,
landmarks): dataset readers, training, cross-task features and fusion, face analysis."""

__version__ = "0.1.0"
