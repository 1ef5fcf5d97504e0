"""The official `openai` Python client against `lore serve`: a grounded
answer from chat.completions.create, streaming and not, structured output
parsed into a Pydantic model, models and embeddings, and a follow-up
question answered from the conversation before it.
Usage: python openai_client.py BASE_URL API_KEY"""
import sys
from typing import Literal

from openai import OpenAI
from pydantic import BaseModel

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key)
question = "How many grams of coffee go into a pour-over?"
messages = [{"role": "user", "content": question}]

reply = client.chat.completions.create(model="lore", messages=messages, max_tokens=64, seed=1)
text = reply.choices[0].message.content
extra = reply.model_extra["lore"]
assert not extra["abstained"], reply
assert "Sources:" in text and "brewing.md" in text, text
assert any(c["path"].endswith("brewing.md") for c in extra["citations"]), extra["citations"]
print("non-streaming:", text.replace("\n", " ")[:160])

parts, final = [], None
for chunk in client.chat.completions.create(model="lore", messages=messages, max_tokens=64, seed=1, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        final = chunk
streamed = "".join(parts)
assert len(parts) > 3, parts
assert final is not None and final.model_extra["lore"]["citations"], final
assert "brewing.md" in streamed, streamed
print("streaming:", streamed.replace("\n", " ")[:160])

class Brew(BaseModel):
    method: Literal["espresso", "pour-over", "cold brew"]
    grams: int
    note: str


# The structured-output helper moved out of `beta` in newer clients.
parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
for seed in (1, 2, 3):
    reply = parse(model="lore", messages=messages, response_format=Brew, max_tokens=96, seed=seed,
                  temperature=0.8)
    brew = reply.choices[0].message.parsed
    assert isinstance(brew, Brew), reply
    assert brew.method in ("espresso", "pour-over", "cold brew"), brew
print("structured:", brew)

ids = [m.id for m in client.models.list().data]
# One model per collection the key may use: an unmodified client picks a
# collection by picking a model ("lore" is "lore:default").
assert "lore" in ids and "lore:default" in ids, ids
vectors = client.embeddings.create(model="lore", input=["espresso", "pour-over"]).data
assert len(vectors) == 2 and len(vectors[0].embedding) == 384, len(vectors[0].embedding)
print("models:", ids, "embeddings:", len(vectors), "x", len(vectors[0].embedding))
# A conversation: the follow-up means nothing alone; lore rewrites it from
# the earlier messages before retrieval and reports the rewrite.
first = [{"role": "user", "content": "How quickly must a SEV1 page be acknowledged?"}]
reply = client.chat.completions.create(model="lore:handbook", messages=first, max_tokens=64)
follow_up = first + [
    {"role": "assistant", "content": reply.choices[0].message.content},
    {"role": "user", "content": "And how fast for SEV2?"},
]
reply = client.chat.completions.create(model="lore:handbook", messages=follow_up, max_tokens=64)
extra = reply.model_extra["lore"]
text = reply.choices[0].message.content
assert "SEV2" in extra["standalone_question"].upper(), extra["standalone_question"]
assert extra["retrieved"][0]["path"].endswith("paging-policy.md"), extra["retrieved"]
assert any(c["path"].endswith("paging-policy.md") for c in extra["citations"]), extra["citations"]
assert "15" in text, text
print("conversation:", extra["standalone_question"], "->", text.replace("\n", " ")[:120])
print("1 passed, 0 failed")
