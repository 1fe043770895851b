"""Generate stage: SID tokenizer, seq2seq generators, constrained beam search, Recall/NDCG evaluation."""
