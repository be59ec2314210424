"""Who is calling and what they may do: SMART Backend Services tokens and SMART scopes."""
