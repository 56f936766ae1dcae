"""taskmem_lab: task-focused memorization of video streams with vision-language models.

Nothing happens at import: no clients, no environment reads, no network.
"""

__version__ = "0.1.0"
