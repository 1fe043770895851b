"""Generate stage: SID tokenizer, seq2seq generators, constrained beam search, Recall/NDCG evaluation.

  tokenizer.SIDTokenizer          items <-> fixed-length SID tokens (END at the suffix slot for unsuffixed items)
  data.SequenceDataModule         <run>/data/sequences.jsonl + <run>/quantize/sid_table.* -> leave-one-out batches
  t5.T5SIDGenerator (`t5`)        TIGER-style T5, one encoder position per history item
  decoder_only.DecoderOnlySIDGenerator (`gpt`)
  trie.SIDTrie                    per-level CSR prefix trie as tensors
  search.constrained_beam_search / constrained_sample -> SearchResult(tokens [B,K,S], scores [B,K], items [B,K])
  metrics.RecallAtK / NDCGAtK     torchmetrics, DDP-summed
  module.GeneratorModule          LightningModule: teacher forcing, beam-search validation, metrics_test.json
  reference.hf_constrained_beam_search   transformers `generate` + prefix_allowed_tokens_fn (tests, benchmark)
"""
