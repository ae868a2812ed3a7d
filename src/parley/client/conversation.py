"""The client's copy of the conversation is the protocol's own reading of it.

`RealtimeClient.conversation` is a `parley.protocol.ConversationState`: items by id, ordered the
way the server orders them (`previous_item_id`), transcripts of both roles assembled from their
deltas. Because user transcription runs asynchronously, a user's words may arrive after the
assistant already started answering: the order is still the order of speech.
"""

from parley.protocol.conversation import ConversationState as Conversation
from parley.protocol.conversation import Item

__all__ = ["Conversation", "Item"]
