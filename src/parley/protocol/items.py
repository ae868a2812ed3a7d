"""Conversation items: validation of what clients send, builders for what the server sends."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["completed", "incomplete", "in_progress"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class InputAudio(_Strict):
    type: Literal["input_audio"]
    audio: str | None = None  # base64, in the session's input format
    transcript: str | None = None


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] = "auto"


class OutputText(_Strict):
    type: Literal["output_text"]
    text: str


class OutputAudio(_Strict):
    type: Literal["output_audio"]
    audio: str | None = None
    transcript: str | None = None


ContentPart = Annotated[
    InputText | InputAudio | InputImage | OutputText | OutputAudio, Field(discriminator="type")
]

_ALLOWED = {
    "system": {"input_text"},
    "user": {"input_text", "input_audio", "input_image"},
    "assistant": {"output_text", "output_audio"},
}


class _ItemBase(_Strict):
    id: str | None = Field(default=None, max_length=64)
    object: Literal["realtime.item"] | None = None
    status: Status | None = None


class MessageItem(_ItemBase):
    type: Literal["message"]
    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]

    @model_validator(mode="before")
    @classmethod
    def _assistant_text(cls, data: Any) -> Any:
        # Older clients write assistant content as `text` (beta); the meaning is unambiguous.
        if isinstance(data, dict) and data.get("role") == "assistant" and isinstance(data.get("content"), list):
            data = dict(data)
            data["content"] = [
                {**p, "type": "output_text"} if isinstance(p, dict) and p.get("type") == "text" else p
                for p in data["content"]
            ]
        return data

    @model_validator(mode="after")
    def _check_content(self) -> MessageItem:
        allowed = _ALLOWED[self.role]
        for part in self.content:
            if part.type not in allowed:
                raise ValueError(f"content type '{part.type}' is not allowed in a {self.role} message "
                                 f"(allowed: {', '.join(sorted(allowed))})")
            if isinstance(part, OutputAudio) and part.audio:
                raise ValueError("clients cannot create assistant audio; send the text as output_text")
        return self


class FunctionCallItem(_ItemBase):
    type: Literal["function_call"]
    name: str
    arguments: str = ""
    call_id: str | None = None


class FunctionCallOutputItem(_ItemBase):
    type: Literal["function_call_output"]
    call_id: str
    output: str


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


class ItemReference(_Strict):
    type: Literal["item_reference"]
    id: str


# -- builders for server-side items (plain dicts, as on the wire) ---------------------------


def message(item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": content}


def function_call(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "function_call", "status": status,
            "name": name, "call_id": call_id, "arguments": arguments}


def function_call_output(item_id: str, call_id: str, output: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "function_call_output", "status": status,
            "call_id": call_id, "output": output}


def input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def input_audio(transcript: str | None, audio: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "input_audio", "transcript": transcript}
    if audio is not None:
        part["audio"] = audio
    return part


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text}


def output_audio(transcript: str, audio: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_audio", "transcript": transcript}
    if audio is not None:
        part["audio"] = audio
    return part


def snapshot(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of a wire item as it is now, for an event: the item and its content parts go on
    changing (text appended, status set, truncation) after the event has been handed over."""
    out = dict(item)
    if "content" in out:
        out["content"] = [dict(p) for p in out["content"]]
    return out


def item_text(item: dict[str, Any]) -> str:
    """The words of a message item: typed text or the transcript of its audio."""
    words = []
    content = item.get("content")
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        text = part.get("text") if part.get("type") in ("input_text", "output_text", "text") else part.get("transcript")
        if isinstance(text, str) and text.strip():
            words.append(text.strip())
    return " ".join(words)
