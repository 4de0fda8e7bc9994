"""Plot helpers of the book: every figure a notebook shows is drawn by a function here."""
