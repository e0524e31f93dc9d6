"""The learning loop: outcomes of stored decisions, beliefs about them, and the day-by-day replay."""
