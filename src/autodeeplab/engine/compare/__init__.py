"""The ``compare`` stage: the searched network against random ones of its cost."""
