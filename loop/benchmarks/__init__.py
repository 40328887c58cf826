"""Zero-shot downstream benchmarks (PIQA, HellaSwag, ARC, WinoGrande, LAMBADA), scored by
the trusted evaluator from token ids staged on the node.

- `formats`: lm-evaluation-harness's dataset rows -> the (context, continuation)
  requests its task configs build, each row checked with a message naming file, line
  and field;
- `stage`: tokenise those requests with the campaign's tokenizer and write a staged
  folder (`asi-node bench stage`); nothing is downloaded;
- `staged`: the staged folder's format, read and verified by the node and the evaluator;
- `scoring`: rows for the forward graphs and the metrics lm-evaluation-harness reports
  (acc, acc_norm, LAMBADA's perplexity), each with its standard error.

The evaluator imports only `staged` and `scoring` (numpy, torch, pydantic): it never
tokenises text, so nothing a candidate controls decides which tokens are scored.
"""
