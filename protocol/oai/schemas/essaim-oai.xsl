<?xml version="1.0" encoding="UTF-8"?>
<!-- Renders OAI-PMH responses as a readable page when a browser follows <?xml-stylesheet?>. -->
<xsl:stylesheet version="1.0"
  xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:oai="http://www.openarchives.org/OAI/2.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  exclude-result-prefixes="oai dc">
  <xsl:output method="html" encoding="UTF-8" indent="yes"/>

  <xsl:variable name="base" select="/oai:OAI-PMH/oai:request"/>

  <xsl:template match="/">
    <html lang="fr">
      <head>
        <meta charset="UTF-8"/>
        <title>OAI-PMH — <xsl:value-of select="/oai:OAI-PMH/oai:request/@verb"/></title>
        <style>body{font-family:sans-serif;max-width:60em;margin:auto;padding:1em}
          table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em;text-align:left}
          .error{color:#a00}nav a{margin-right:1em}</style>
      </head>
      <body>
        <nav>
          <a href="{$base}?verb=Identify">Identify</a>
          <a href="{$base}?verb=ListMetadataFormats">ListMetadataFormats</a>
          <a href="{$base}?verb=ListSets">ListSets</a>
          <a href="{$base}?verb=ListRecords&amp;metadataPrefix=oai_dc">ListRecords</a>
          <a href="{$base}?verb=ListIdentifiers&amp;metadataPrefix=oai_dc">ListIdentifiers</a>
        </nav>
        <p>Réponse du <xsl:value-of select="/oai:OAI-PMH/oai:responseDate"/></p>
        <xsl:apply-templates select="/oai:OAI-PMH/*[position() &gt; 2]"/>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="oai:error">
    <p class="error"><strong><xsl:value-of select="@code"/></strong> : <xsl:value-of select="."/></p>
  </xsl:template>

  <xsl:template match="oai:Identify">
    <h1><xsl:value-of select="oai:repositoryName"/></h1>
    <table>
      <xsl:for-each select="*[not(self::oai:description)]">
        <tr><th><xsl:value-of select="local-name()"/></th><td><xsl:value-of select="."/></td></tr>
      </xsl:for-each>
    </table>
  </xsl:template>

  <xsl:template match="oai:ListMetadataFormats">
    <h1>Formats</h1>
    <table>
      <xsl:for-each select="oai:metadataFormat">
        <tr><td><xsl:value-of select="oai:metadataPrefix"/></td>
          <td><a href="{oai:schema}"><xsl:value-of select="oai:schema"/></a></td>
          <td><xsl:value-of select="oai:metadataNamespace"/></td></tr>
      </xsl:for-each>
    </table>
  </xsl:template>

  <xsl:template match="oai:ListSets">
    <h1>Ensembles</h1>
    <table>
      <xsl:for-each select="oai:set">
        <tr><td><a href="{$base}?verb=ListRecords&amp;metadataPrefix=oai_dc&amp;set={oai:setSpec}">
          <xsl:value-of select="oai:setSpec"/></a></td><td><xsl:value-of select="oai:setName"/></td></tr>
      </xsl:for-each>
    </table>
  </xsl:template>

  <xsl:template match="oai:GetRecord|oai:ListRecords|oai:ListIdentifiers">
    <h1><xsl:value-of select="local-name()"/></h1>
    <xsl:apply-templates select="oai:record|oai:header"/>
    <xsl:apply-templates select="oai:resumptionToken"/>
  </xsl:template>

  <xsl:template match="oai:record">
    <section>
      <xsl:apply-templates select="oai:header"/>
      <xsl:for-each select="oai:metadata//dc:*">
        <div><em><xsl:value-of select="local-name()"/></em> : <xsl:value-of select="."/></div>
      </xsl:for-each>
    </section>
  </xsl:template>

  <xsl:template match="oai:header">
    <h2>
      <xsl:value-of select="oai:identifier"/>
      <xsl:if test="@status = 'deleted'"> (supprimée)</xsl:if>
    </h2>
    <p><xsl:value-of select="oai:datestamp"/> — <xsl:for-each select="oai:setSpec"><code><xsl:value-of select="."/></code><xsl:text> </xsl:text></xsl:for-each></p>
  </xsl:template>

  <xsl:template match="oai:resumptionToken">
    <p>
      <xsl:value-of select="@cursor"/> / <xsl:value-of select="@completeListSize"/>
      <xsl:if test="string(.)">
        — <a href="{$base}?verb={/oai:OAI-PMH/oai:request/@verb}&amp;resumptionToken={.}">page suivante</a>
      </xsl:if>
    </p>
  </xsl:template>
</xsl:stylesheet>
