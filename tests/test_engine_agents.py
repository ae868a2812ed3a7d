"""openai-agents' RealtimeRunner against the engine, with the chat responder.

tests/chat_server.py is a small OpenAI-compatible chat server standing in for the LLM.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from parley.apps.local import local_engine
from parley.engine.app import EngineSettings, create_app
from parley.util.serving import serve_app
from support.chat_server import arun_chat_server


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny and 21 degrees in {city}."


def _assistant_texts(history: list[Any]) -> list[str]:
    texts = []
    for item in history:
        if getattr(item, "role", None) == "assistant":
            for part in item.content:
                text = getattr(part, "text", None) or getattr(part, "transcript", None)
                if text:
                    texts.append(text)
    return texts


async def test_agents_runner_text_turn_and_tool_call() -> None:
    async with arun_chat_server() as chat_url:
        engine = local_engine(EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="test-chat",
                                       warm_up=False))
        with serve_app(create_app(engine)) as url:
            agent = RealtimeAgent(name="Assistant", instructions="You answer briefly.", tools=[get_weather])
            runner = RealtimeRunner(agent)
            session = await runner.run(model_config={
                "url": url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime",
                "api_key": "sk-local",
                "initial_model_settings": {"output_modalities": ["text"], "turn_detection": None},
            })
            seen: list[str] = []
            tool_outputs: list[str] = []
            async with session:

                async def wait_for_answer(containing: str) -> list[str]:
                    async def loop() -> list[str]:
                        async for event in session:
                            seen.append(event.type)
                            if event.type == "tool_end":
                                tool_outputs.append(str(event.output))
                            if event.type == "error":
                                raise AssertionError(event.error)
                            texts = _assistant_texts(session._history)
                            if any(containing in t for t in texts):
                                return texts
                        raise AssertionError("session ended")

                    return await asyncio.wait_for(loop(), 30)

                await session.send_message("Hello there")
                texts = await wait_for_answer("You said: Hello there")
                assert texts
                await session.send_message("What is the weather in Paris?")
                texts = await wait_for_answer("It is sunny and 21 degrees in Paris")
            assert tool_outputs == ["It is sunny and 21 degrees in Paris."]
            assert "tool_start" in seen and "tool_end" in seen
            # the LLM saw the tool as a function and got its result back
            sent = chat_url.requests
            assert any(r.get("tools") for r in sent)
            assert any(m.get("role") == "tool" for r in sent for m in r["messages"])
