"""Laurel's review station: a PyQt5 app where an operator corrects and approves AI drafts."""
