"""The web console and customer portal, served by the daemon under /console/."""
