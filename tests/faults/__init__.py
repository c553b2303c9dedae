"""The fault suite: real `eventbook` processes and real servers, broken on purpose."""
