"""Prompt catalogue data (catalogue.yaml); rendering lives in ivr.prompts."""
