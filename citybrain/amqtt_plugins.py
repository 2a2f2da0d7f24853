"""amqtt plugins that make the embedded broker enforce Mosquitto's password and ACL files.

amqtt's own FileAuthPlugin wants argon2 hashes and its ACL plugin has no per-user patterns
(``%u``), so neither can read ``deploy/mosquitto/``; these two read it through
:mod:`citybrain.mqtt_auth`. Imported only by the embedded broker process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from citybrain import mqtt_auth

log = logging.getLogger(__name__)


class MosquittoPasswordPlugin(BaseAuthPlugin):
    """Accept a client only with a user name and password found in a mosquitto password file."""

    def __init__(self, context) -> None:
        super().__init__(context)
        self._users = mqtt_auth.load_passwords(self.config.password_file)

    async def authenticate(self, *, session) -> bool:
        encoded = self._users.get(session.username or "")
        ok = bool(encoded) and mqtt_auth.verify_password(session.password or "", encoded)
        if not ok:
            log.warning("mqtt: refused client %s (user %r): bad user name or password",
                        session.client_id, session.username)
        return ok

    @dataclass
    class Config:
        password_file: str = ""


class MosquittoAclPlugin(BaseTopicPlugin):
    """Allow publish, subscribe and delivery only as a mosquitto ACL file says."""

    def __init__(self, context) -> None:
        super().__init__(context)
        self._acl = mqtt_auth.load_acl(self.config.acl_file)

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        if session is None or not topic:
            return False
        user, cid = session.username, session.client_id or ""
        if action == Action.PUBLISH:
            ok = self._acl.may_publish(user, cid, topic)
        elif action == Action.SUBSCRIBE:
            ok = self._acl.may_subscribe(user, cid, topic)
        else:
            return self._acl.may_receive(user, cid, topic)
        if not ok:
            log.warning("mqtt: denied %s of %r to user %r (client %s)", action.value, topic, user, cid)
        return ok

    @dataclass
    class Config:
        acl_file: str = ""


class AnonymousPersistentPlugin(BaseAuthPlugin):
    """Accept any client without marking its session anonymous.

    amqtt's AnonymousAuthPlugin flags sessions anonymous, and amqtt then neither queues QoS 1
    messages for a disconnected anonymous session nor keeps it, so ingest's persistent session
    (clean_session False) would lose what arrived while it restarted. See citybrain.amqtt_session.
    """

    async def authenticate(self, *, session) -> bool:
        return True
