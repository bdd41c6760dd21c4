"""The story: a story, its turns, states and learned weights with the model, kept in SQLite.

It imports the engine and the base modules, never the worker or a front-end."""
