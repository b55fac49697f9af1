"""Test doubles: a fake OpenAI server and a local Hugging Face Hub, for the tests only."""
