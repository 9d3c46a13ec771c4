"""The app's own Ryu events: what starts outside its event thread, posted to
its queue so that one thread changes the Switches (controller/app.py)."""
from ryu.controller import event


class EventState(event.EventBase):
    """A new cluster state and what changed, from the source's green thread."""

    def __init__(self, state, change):
        super().__init__()
        self.state, self.change = state, change


class EventContexts(event.EventBase):
    """A new {dpid: BridgeContext} snapshot, from the OVSDB monitor's thread."""

    def __init__(self, contexts):
        super().__init__()
        self.contexts = contexts


class EventTick(event.EventBase):
    """The clock: time passed (the app posts one every ``app.TICK`` seconds)."""
