"""AesExpert Companion: the AesExpert pipeline, runnable and tested.

One module per stage (``data``, ``collect``, ``generate``, ``train``, ``evaluate``, ``report``)
over one shared :mod:`aes_lib.schema`. Stages hand over through files on disk. Heavy libraries
(torch, transformers, peft) are imported inside the functions that use them, so importing this
package stays fast and works without the notebook-only dependencies.
"""

__version__ = "0.1.0"
