"""A conversation's context, as memory stores it and the orchestrator extends it.

- `records`: stored messages (and their place in the conversation), the summary state and a
  context snapshot, free of MongoDB and protobuf plumbing;
- `facts`: the key facts stated in a turn's messages;
- `tokens`: token counting with an offline tokenizer;
- `window`: fitting facts, the summary and the newest messages into a token budget.
"""
