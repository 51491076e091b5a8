"""Line profiles: classify, allow, count and cut every outbound call."""
