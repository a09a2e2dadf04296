"""The loops: search, (re)training and evaluation, with seeding, logging and resume."""
