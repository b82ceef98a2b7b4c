"""A scripted browser for end-to-end tests without Chromium: registers with the sandbox's device
bridge over HTTP and reads its server-sent events, as static/js/sandbox-device.js does."""
import json
import queue
import threading

import requests


class ScriptedDevice:
    def __init__(self, base_url, token):
        self.base = base_url + "/sandbox/devices"
        response = requests.post(self.base, json={"token": token}, timeout=5)
        self.status_code = response.status_code
        self.body = response.json()
        self.events = queue.Queue()
        self.id = self.body.get("device_id")
        if self.id:
            self._stream = requests.get(base_url + self.body["events_url"], stream=True, timeout=30)
            threading.Thread(target=self._read, daemon=True).start()
            assert self.next("registered")

    def _read(self):
        event = None
        try:
            for line in self._stream.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    self.received(event, json.loads(line[6:]))
                    event = None
        except (requests.RequestException, AttributeError):
            pass  # closed by the test

    def received(self, event, data):
        """An event from the carrier (a subclass may note more about it)."""
        self.events.put((event, data))

    def next(self, name, timeout=10):
        """The next event called `name` (earlier ones of other names are dropped)."""
        while True:
            event, data = self.events.get(timeout=timeout)
            if event == name:
                return data

    def act(self, call_sid, action, **body):
        return requests.post(f"{self.base}/{self.id}/calls/{call_sid}/{action}", json=body, timeout=5)

    def close(self):
        if self.id:
            requests.delete(f"{self.base}/{self.id}", timeout=5)
            self._stream.close()
