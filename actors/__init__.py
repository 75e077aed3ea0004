"""The Alys node's actors. Each module holds one actor; they use only the public ``alysd`` API."""
