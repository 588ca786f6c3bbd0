"""A local stand-in for the Gemini Developer API (Files API and generateContent)."""
