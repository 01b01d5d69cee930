"""seq2seq-lab's application layer: the `seq2seq` command line over both backends."""
