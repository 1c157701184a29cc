"""The official `openai` client against an OpenAI-compatible gateway.

Usage: python openai_chat.py <base_url>   (e.g. http://127.0.0.1:10000/v1)

Runs one chat completion and one streamed completion (with
`stream_options={"include_usage": True}`) and prints one JSON line for
each, for crates/vessel-proxy/tests/all/llm_stream.rs to check:

  {"kind": "completion", "content": ..., "usage": {...}, "worker": ...}
  {"kind": "stream", "tokens": [...], "finish_reason": ..., "usage": {...}}
"""

import json
import os
import sys

# Loopback only: no proxy from the environment.
for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(var, None)

from openai import OpenAI  # noqa: E402


def main() -> None:
    base_url = sys.argv[1]
    client = OpenAI(base_url=base_url, api_key="not-checked", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "say something nice"}]

    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
    completion = raw.parse()
    print(
        json.dumps(
            {
                "kind": "completion",
                "content": completion.choices[0].message.content,
                "usage": completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}),
                "worker": raw.headers.get("x-worker"),
            }
        ),
        flush=True,
    )

    tokens = []
    finish_reason = None
    usage = None
    stream = client.chat.completions.create(
        model="fake-model",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
        for choice in chunk.choices:
            if choice.delta.content:
                tokens.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    print(json.dumps({"kind": "stream", "tokens": tokens, "finish_reason": finish_reason, "usage": usage}), flush=True)


if __name__ == "__main__":
    main()
