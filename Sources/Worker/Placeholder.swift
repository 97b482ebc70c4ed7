public enum _PlaceholderWorker {}
