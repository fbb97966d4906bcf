// tests written by helper
