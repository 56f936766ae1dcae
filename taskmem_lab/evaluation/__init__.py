"""Evaluation stage: answering benchmark questions from memory, judging, and scoring."""
