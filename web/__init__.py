"""The web console: login, live rooms page and actions, usage page, events
API (WebSocket and webhooks), and the HTTP routes of the browser participant.

`web.server.WebServer` runs `web.app.make_app` on its own asyncio loop;
`web.backend.Backend` is what it needs from the app server, and
`web.hub.EventHub` carries the room events from any thread to the browsers.
"""
