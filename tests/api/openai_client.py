"""The official `openai` Python client against `lore serve`: a grounded
answer from chat.completions.create, streaming and not, plus models and
embeddings. Usage: python openai_client.py BASE_URL API_KEY"""
import sys

from openai import OpenAI

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

ids = [m.id for m in client.models.list().data]
assert "lore" in ids, ids
vectors = client.embeddings.create(model="lore", input=["espresso", "pour-over"]).data
assert len(vectors) == 2 and len(vectors[0].embedding) == 384, len(vectors[0].embedding)
print("models:", ids, "embeddings:", len(vectors), "x", len(vectors[0].embedding))
print("1 passed, 0 failed")
