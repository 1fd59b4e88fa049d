"""Routes, by audience."""
