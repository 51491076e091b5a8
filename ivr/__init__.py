"""IVR dialogues: digit collection, PIN entry and spoken prompts."""
