"""Asterisk's manager interface (AMI): the only importer of panoramisk's AMI ``Manager``."""
