"""Export of whole experiments as validated BIDS datasets (ZIP, with progress and download)."""
