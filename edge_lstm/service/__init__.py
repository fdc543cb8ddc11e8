"""The service around the core: the daemon loop, its MQTT link, configuration, logs, systemd notify."""
