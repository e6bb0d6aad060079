"""A separate Ray driver calling NOA through ``serve.get_app_handle("noa")``.

Run by the e2e tests with RAY_ADDRESS set; prints one JSON line with what it saw.
"""

import asyncio
import json

import ray
from ray import serve

from noa.errors import ModelNotFoundError
from noa.jobs.client import JobClient

BODY = {
    "model": "smollm2",
    "messages": [
        {"role": "system", "content": "You are a helpful AI assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "max_tokens": 30,
    "temperature": 0,
}

ray.init(logging_level="ERROR", log_to_driver=False)
handle = serve.get_app_handle("noa")
# "refresh": goes upstream even if an earlier test cached this; the repeat is a cache hit
report = {"chat": handle.chat.remote({**BODY, "noa_cache": "refresh"}).result()}
report["again"] = handle.chat.remote(BODY).result()
stream_body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
chunks = list(handle.options(stream=True).chat.remote(stream_body))
report["streamed_text"] = "".join(
    c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
)
report["stream_usage"] = chunks[-1]["usage"]
report["stream_noa"] = chunks[0].get("noa")
report["models"] = [m["id"] for m in handle.models.remote().result()["data"]]
embedding = handle.embeddings.remote({"model": "smollm2", "input": "hello"}).result()
report["embedding_length"] = len(embedding["data"][0]["embedding"])
try:
    handle.chat.remote({**BODY, "model": "no-such-model"}).result()
except ModelNotFoundError as e:
    report["not_found"] = {"status": e.status_code, "is_model_not_found": True}


async def run_a_job() -> dict:
    """A job from another Ray job: submitted and awaited over the handle."""
    jobs = JobClient(handle)
    job = {"endpoint": "/v1/embeddings", "body": {"model": "smollm2", "input": "a job"}}
    submitted = await jobs.submit(job, idempotency_key="driver-job")
    result = await jobs.run(job, idempotency_key="driver-job", timeout_s=120)
    return {"id": submitted["id"], "length": len(result["data"][0]["embedding"])}


report["job"] = asyncio.run(run_a_job())
print(json.dumps(report))
