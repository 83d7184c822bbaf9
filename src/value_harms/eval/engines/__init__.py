"""Generation engines other than the in-process HF path (`generation.engine`): an OpenAI-compatible
server, vLLM started by the project or already running. See eval/engines/vllm.py."""

from value_harms.eval.engines.vllm import adapter_name, engine_identity, get_engine, shutdown_engines

ENGINES = ("hf", "vllm", "openai")

__all__ = ["ENGINES", "adapter_name", "engine_identity", "get_engine", "shutdown_engines"]
