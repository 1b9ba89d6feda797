"""The torch-free leaf every layer shares: the artifact contract (metadata schema, hashing), image decoding and
preprocessing, the tokenizer, the photo renderer and the dataset readers with their splits. It imports nothing
else from the project; models/, training/, export/, service/, loadtest/ and bench/ may all import it."""
