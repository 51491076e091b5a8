"""Prompt catalogue data (catalogue.yaml, spoken) and written texts (texts.yaml,
alerts); rendering and lookup live in ivr.prompts."""
