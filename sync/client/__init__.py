"""The reference device client, what a phone app does: `device.py`
(`DeviceClient`: encrypt, keep an outbox, upload with retries) and
`recorder.py` (`witness-record`, which records or cuts a file into pieces and
uploads it). Speaks the wire protocol over HTTP only and imports none of the
server: a third-party app can read it as an example.
"""
